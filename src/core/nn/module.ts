// Modules own named parameters (kept outside every tidy scope) and child modules. Names are dotted paths
// ("encoder.blocks.input.w") so checkpoints map one-to-one onto safetensors entries.
import { Device, Tensor, keep, randNormal } from '../tensor';
import { Philox } from '../tensor/rng';

export abstract class Module {
  private readonly params = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  protected addParameter(name: string, t: Tensor): Tensor {
    if (this.params.has(name) || this.children.has(name)) throw new Error(`dalle: duplicate parameter name '${name}'`);
    t.requiresGrad = true;
    t.name = name;
    this.params.set(name, keep(t));
    return t;
  }

  protected addModule<M extends Module>(name: string, m: M): M {
    if (this.params.has(name) || this.children.has(name)) throw new Error(`dalle: duplicate module name '${name}'`);
    this.children.set(name, m);
    return m;
  }

  /** Every parameter with its dotted path, in registration order (deterministic). */
  namedParameters(prefix = ''): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [n, t] of this.params) out.push([prefix + n, t]);
    for (const [n, m] of this.children) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  parameterCount(): number {
    return this.parameters().reduce((s, t) => s + t.size, 0);
  }

  /** The device of the parameters ('cpu' for a module without any): where its inputs must be. */
  get device(): Device {
    const [first] = this.namedParameters();
    return first ? first[1].device : 'cpu';
  }

  /**
   * Moves every parameter (and its gradient) to `device` in place: the same tensors, now on that device. A module
   * that keeps tensors besides its parameters (index tables, masks) overrides this to move them too.
   */
  to(device: Device): this {
    for (const t of this.parameters()) t.moveTo(device);
    return this;
  }

  dispose(): void {
    for (const t of this.parameters()) t.dispose();
  }
}

/** Normal(0, std) initial values from a seeded generator (generated natively: the paper dVAE's 98M in well under a second). */
export function normalInit(shape: number[], std: number, rng: Philox): Tensor {
  return randNormal(rng, shape, 0, std);
}
