/** The config system: defaults, YAML overrides, --set typing, and errors that name the file, line and key. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  closestMatch,
  ConfigError,
  defineConfig,
  dvaeConfig,
  formatConfigYaml,
  int,
  integerList,
  levenshtein,
  num,
  oneOf,
  priorConfig,
  readRunConfig,
  resolveAnyConfig,
  resolveConfig,
  resolveConfigWithSources,
  str,
  writeRunConfig,
  bool,
} from '../src/core/config';

const ROOT = path.resolve(__dirname, '..', '..');
const CONFIGS = path.join(ROOT, 'configs');

const temporaryDirs: string[] = [];
after(() => {
  for (const dir of temporaryDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function temporaryDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-config-'));
  temporaryDirs.push(dir);
  return dir;
}

/** Writes `text` to a fresh temporary YAML file and returns its path. */
function yamlFile(text: string, name = 'test.yaml'): string {
  const dir = temporaryDir();
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Runs `fn`, expects a ConfigError, and returns it for inspection. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a ConfigError, but nothing was thrown');
}

// A schema with every field type, independent of the model schemas.
const toySchema = defineConfig('toy', 'A schema for tests.', {
  run: {
    name: str('demo', 'a string'),
    note: str(null, 'a nullable string'),
    steps: int(10, 'an integer >= 1', { min: 1 }),
    rate: num(0.5, 'a number in (0, 1)', { greaterThan: 0, lessThan: 1 }),
    verbose: bool(false, 'a boolean'),
    mode: oneOf(['fast', 'slow'] as const, 'fast', 'an enum'),
    widths: integerList([1, 2, 4], 'a list of integers >= 1', { min: 1 }),
  },
});

describe('config: defaults', () => {
  it('the dVAE defaults are the paper numbers', () => {
    const config = resolveConfig(dvaeConfig);
    assert.equal(config.kind, 'dvae');
    assert.deepEqual(config.model, {
      n_hid: 256,
      n_groups: 4,
      n_blk_per_group: 2,
      vocab_size: 8192,
      input_channels: 3,
      n_init: 128,
      logit_laplace_eps: 0.1,
    });
    assert.equal(config.data.resolution, 256);
    assert.equal(config.train.kl_weight, 6.6);
    assert.equal(config.train.kl_ramp_steps, 5000);
    assert.equal(config.train.tau_start, 1);
    assert.equal(config.train.tau_end, 1 / 16);
    assert.equal(config.train.tau_anneal_steps, 150_000);
    assert.equal(config.train.lr, 1e-4);
    assert.equal(config.train.lr_min, 1.25e-6);
    assert.equal(config.train.batch_size, 512);
    assert.deepEqual(config.runtime, { seed: 0, threads: 0, device: 'cpu', precision: 'fp32', dist_timeout_s: 300 });
  });

  it('the prior defaults are the paper numbers', () => {
    const config = resolveConfig(priorConfig);
    assert.equal(config.kind, 'prior');
    assert.equal(config.model.n_layers, 64);
    assert.equal(config.model.n_heads * config.model.head_dim, 3968);
    assert.equal(config.model.text_len, 256);
    assert.equal(config.model.text_vocab, 16384);
    assert.equal(config.model.image_grid, 32);
    assert.equal(config.model.image_vocab, 8192);
    assert.equal(config.model.conv_kernel, 11);
    assert.equal(config.data.bpe_dropout, 0.1);
    assert.equal(config.train.text_loss_weight, 1 / 8);
    assert.equal(config.train.image_loss_weight, 7 / 8);
    assert.deepEqual([config.train.beta1, config.train.beta2, config.train.eps], [0.9, 0.96, 1e-8]);
    assert.equal(config.train.weight_decay, 4.5e-2);
    assert.equal(config.train.grad_clip, 4);
    assert.equal(config.train.warmup_steps, 5000);
    assert.equal(config.train.lr, 4.5e-4);
    assert.equal(config.train.grad_scale.init, 2 ** 13);
  });

  it('resolved configs are frozen', () => {
    const config = resolveConfig(dvaeConfig);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.train));
  });

  it('the paper configs override nothing; every shipped config resolves', () => {
    assert.deepEqual(
      resolveConfig(dvaeConfig, { file: path.join(CONFIGS, 'dvae-paper.yaml') }),
      resolveConfig(dvaeConfig),
    );
    assert.deepEqual(
      resolveConfig(priorConfig, { file: path.join(CONFIGS, 'prior-paper.yaml') }),
      resolveConfig(priorConfig),
    );
    for (const name of fs.readdirSync(CONFIGS).filter((file) => file.endsWith('.yaml'))) {
      assert.doesNotThrow(() => resolveAnyConfig({ file: path.join(CONFIGS, name) }), name);
    }
  });
});

describe('config: overrides', () => {
  it('a YAML file overrides only the keys it names', () => {
    const config = resolveConfig(dvaeConfig, { file: path.join(CONFIGS, 'dvae-emoji.yaml') });
    assert.equal(config.model.n_hid, 64);
    assert.equal(config.model.n_groups, 3);
    assert.equal(config.model.n_blk_per_group, 1);
    assert.equal(config.model.vocab_size, 1024);
    assert.equal(config.data.resolution, 64);
    assert.equal(config.train.batch_size, 16);
    assert.equal(config.train.beta2, 0.999, 'untouched keys keep their defaults');
  });

  it('the emoji configs fit together: the dVAE grid and vocabulary are the prior image grid and vocabulary', () => {
    const dvae = resolveConfig(dvaeConfig, { file: path.join(CONFIGS, 'dvae-emoji.yaml') });
    const prior = resolveConfig(priorConfig, { file: path.join(CONFIGS, 'prior-emoji.yaml') });
    assert.equal(dvae.data.resolution / 2 ** (dvae.model.n_groups - 1), prior.model.image_grid);
    assert.equal(dvae.model.vocab_size, prior.model.image_vocab);
    assert.equal(prior.model.n_heads * prior.model.head_dim, 256);
  });

  it('--set applies after the file, in order, the last one winning', () => {
    const config = resolveConfig(dvaeConfig, {
      file: path.join(CONFIGS, 'dvae-emoji.yaml'),
      sets: ['model.n_hid=32', 'train.lr=3e-4', 'model.n_hid=48'],
    });
    assert.equal(config.model.n_hid, 48);
    assert.equal(config.train.lr, 3e-4);
  });

  it('--set values are typed by the field', () => {
    const config = resolveConfig(toySchema, {
      sets: ['run.steps=3', 'run.rate=.25', 'run.verbose=true', 'run.name=42', 'run.mode=slow', 'run.widths=[8, 16]'],
    });
    assert.equal(config.run.steps, 3);
    assert.equal(config.run.rate, 0.25);
    assert.equal(config.run.verbose, true);
    assert.equal(config.run.name, '42', 'a string field keeps the text, even when it looks like a number');
    assert.equal(config.run.mode, 'slow');
    assert.deepEqual(config.run.widths, [8, 16]);
    assert.deepEqual(resolveConfig(toySchema, { sets: ['run.widths=2,3'] }).run.widths, [2, 3]);
    assert.deepEqual(resolveConfig(toySchema, { sets: ['run.widths='] }).run.widths, []);
    assert.equal(resolveConfig(toySchema, { sets: ['run.name=a=b'] }).run.name, 'a=b', 'only the first = splits');
  });

  it('nullable fields accept null; others do not', () => {
    assert.equal(resolveConfig(toySchema).run.note, null);
    assert.equal(resolveConfig(toySchema, { sets: ['run.note=hello'] }).run.note, 'hello');
    assert.equal(resolveConfig(toySchema, { file: yamlFile('kind: toy\nrun:\n  note: null\n') }).run.note, null);
    const error = configError(() => resolveConfig(toySchema, { file: yamlFile('kind: toy\nrun:\n  steps:\n') }));
    assert.match(error.message, /:3:\d+: run\.steps: expected an integer >= 1, got null$/);
  });

  it('reports where each non-default value came from', () => {
    const file = yamlFile('kind: toy\nrun:\n  steps: 5\n');
    const { sources } = resolveConfigWithSources(toySchema, { file, sets: ['run.rate=0.1'] });
    assert.deepEqual(sources.get('run.steps'), { file, line: 3, column: 10 });
    assert.deepEqual(sources.get('run.rate'), { argument: '--set run.rate=0.1' });
    assert.equal(sources.has('run.name'), false);
  });
});

describe('config: errors name the file, line and key', () => {
  it('an unknown key suggests the closest key, at file:line:column', () => {
    const file = yamlFile('kind: dvae\nmodel:\n  n_hid: 64\ntrain:\n  lrr: 3\n', 'typo.yaml');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.file, file);
    assert.equal(error.line, 5);
    assert.equal(error.column, 3);
    assert.equal(error.keyPath, 'train.lrr');
    assert.equal(error.message, `${file}:5:3: train.lrr: unknown key; did you mean "train.lr"?`);
  });

  it('a key in the wrong section points to the right one', () => {
    const file = yamlFile('kind: dvae\ntrain:\n  n_hid: 64\n');
    assert.match(
      configError(() => resolveConfig(dvaeConfig, { file })).message,
      /train\.n_hid: unknown key; did you mean "model\.n_hid"\?/,
    );
  });

  it('a misspelled section suggests the section', () => {
    const file = yamlFile('kind: dvae\nmodle:\n  n_hid: 64\n');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.keyPath, 'modle');
    assert.match(error.message, /did you mean "model"\?/);
  });

  it('an unknown key with no close match lists the valid keys in its hint', () => {
    const error = configError(() => resolveConfig(toySchema, { sets: ['run.zzzzzzzz=1'] }));
    assert.equal(error.message, '--set run.zzzzzzzz=1: run.zzzzzzzz: unknown key');
    assert.match(error.hint ?? '', /name, note, steps, rate, verbose, mode, widths/);
  });

  it('a wrong type names the file, line, column and key', () => {
    const file = yamlFile('kind: dvae\n\ntrain:\n  batch_size: 8\n  lr: fast\n', 'x.yaml');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.message, `${file}:5:7: train.lr: expected a number > 0, got "fast"`);
    assert.equal(error.keyPath, 'train.lr');
    assert.match(error.hint ?? '', /peak AdamW step size/);
  });

  it('an out-of-range value is an error', () => {
    const file = yamlFile('kind: prior\ntrain:\n  beta2: 1.5\n');
    const error = configError(() => resolveConfig(priorConfig, { file }));
    assert.equal(error.line, 3);
    assert.match(error.message, /train\.beta2: expected a number >= 0 and < 1, got 1\.5$/);
    assert.match(
      configError(() => resolveConfig(dvaeConfig, { sets: ['train.steps=2.5'] })).message,
      /expected an integer >= 1, got 2\.5/,
    );
    assert.match(
      configError(() => resolveConfig(priorConfig, { sets: ['model.conv_kernel=10'] })).message,
      /expected an odd integer, got 10/,
    );
  });

  it('a string where a number belongs, and a number where a string belongs', () => {
    const quoted = yamlFile('kind: toy\nrun:\n  steps: "3"\n');
    assert.match(
      configError(() => resolveConfig(toySchema, { file: quoted })).message,
      /run\.steps: expected an integer >= 1, got "3"/,
    );
    const unquoted = yamlFile('kind: toy\nrun:\n  name: 2024\n');
    assert.match(
      configError(() => resolveConfig(toySchema, { file: unquoted })).message,
      /expected a string, got 2024; quote it: "2024"/,
    );
  });

  it('an enum suggests the closest choice', () => {
    const error = configError(() => resolveConfig(toySchema, { sets: ['run.mode=slwo'] }));
    assert.equal(
      error.message,
      '--set run.mode=slwo: run.mode: expected one of fast, slow, got "slwo"; did you mean "slow"?',
    );
  });

  it('a bad list item names its index', () => {
    const file = yamlFile('kind: toy\nrun:\n  widths: [1, 0]\n');
    assert.match(
      configError(() => resolveConfig(toySchema, { file })).message,
      /run\.widths: item 1: expected a list of integers >= 1, got 0/,
    );
  });

  it('a bad --set names the argument', () => {
    const error = configError(() => resolveConfig(dvaeConfig, { sets: ['train.lr=fast'] }));
    assert.equal(error.argument, '--set train.lr=fast');
    assert.equal(error.file, undefined);
    assert.equal(error.message, '--set train.lr=fast: train.lr: expected a number > 0, got "fast"');
    assert.match(
      configError(() => resolveConfig(dvaeConfig, { sets: ['train.lr'] })).message,
      /^--set train\.lr: expected KEY=VALUE/,
    );
    assert.match(
      configError(() => resolveConfig(dvaeConfig, { sets: ['train=1'] })).message,
      /train: is a section, not a value/,
    );
    assert.match(
      configError(() => resolveConfig(dvaeConfig, { sets: ['kind=prior'] })).message,
      /cannot be changed with --set/,
    );
    assert.match(
      configError(() => resolveConfig(toySchema, { sets: ['run.verbose=yes'] })).message,
      /expected true or false, got "yes"/,
    );
  });

  it('a value where a section belongs is an error', () => {
    const file = yamlFile('kind: dvae\ntrain: 3\n');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.line, 2);
    assert.match(error.message, /train: expected a section/);
  });

  it('malformed YAML gives file:line', () => {
    const file = yamlFile('kind: dvae\ntrain:\n  lr: [1e-4,\nmodel: {\n');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.file, file);
    assert.ok(error.line !== undefined && error.line >= 3, `line ${String(error.line)}`);
    assert.match(error.message, new RegExp(`^${escape(file)}:\\d+:\\d+: malformed YAML: `));
  });

  it('a duplicate key is malformed YAML at the second occurrence', () => {
    const file = yamlFile('kind: dvae\ntrain:\n  lr: 1\n  lr: 2\n');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.line, 4);
    assert.match(error.message, /unique/);
  });

  it('a missing file is an error naming it', () => {
    const error = configError(() => resolveConfig(dvaeConfig, { file: '/nonexistent/dvae.yaml' }));
    assert.equal(error.file, '/nonexistent/dvae.yaml');
    assert.match(error.message, /no such file/);
  });

  it('cross-field rules are reported where the offending value was set', () => {
    const file = yamlFile('kind: dvae\ntrain:\n  lr: 1e-4\n  lr_min: 1e-3\n');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.message, `${file}:4:11: train.lr_min: must be <= train.lr (0.0001), got 0.001`);
    // lr_min is its default here; the value that broke the rule is lr, so that is where the error points.
    const related = configError(() => resolveConfig(dvaeConfig, { sets: ['train.lr=1e-7'] }));
    assert.equal(related.argument, '--set train.lr=1e-7');
    assert.equal(related.keyPath, 'train.lr_min');
    const grid = configError(() => resolveConfig(dvaeConfig, { sets: ['model.n_groups=5', 'data.resolution=8'] }));
    assert.match(grid.message, /data\.resolution: must be a multiple of 2\^\(model\.n_groups - 1\) = 16/);
  });
});

describe('config: kinds', () => {
  it('the kind line of a file picks the schema', () => {
    const dvae = resolveAnyConfig({ file: path.join(CONFIGS, 'dvae-emoji.yaml') });
    assert.equal(dvae.config.kind, 'dvae');
    assert.equal(dvae.schema, dvaeConfig);
    const prior = resolveAnyConfig({ file: path.join(CONFIGS, 'prior-emoji.yaml'), sets: ['model.n_layers=4'] });
    assert.equal(prior.config.kind, 'prior');
    assert.ok(prior.config.kind === 'prior' && prior.config.model.n_layers === 4);
  });

  it('without a file, the kind is given', () => {
    assert.deepEqual(resolveAnyConfig({ kind: 'prior' }).config, resolveConfig(priorConfig));
    assert.match(configError(() => resolveAnyConfig({})).message, /no config given/);
  });

  it('a file without a kind line is an error at line 1', () => {
    const file = yamlFile('model:\n  n_hid: 64\n');
    const error = configError(() => resolveConfig(dvaeConfig, { file }));
    assert.equal(error.keyPath, 'kind');
    assert.equal(error.line, 1);
    assert.match(error.hint ?? '', /kind: dvae/);
    assert.equal(configError(() => resolveAnyConfig({ file })).keyPath, 'kind');
  });

  it('a file of another kind is refused where a kind is required', () => {
    const error = configError(() => resolveConfig(dvaeConfig, { file: path.join(CONFIGS, 'prior-emoji.yaml') }));
    assert.equal(error.line, 4);
    assert.match(error.message, /this is a "prior" config, but a "dvae" config is needed here/);
    assert.throws(() => resolveAnyConfig({ kind: 'dvae', file: path.join(CONFIGS, 'prior-emoji.yaml') }), ConfigError);
  });

  it('an unknown kind suggests the closest', () => {
    const error = configError(() => resolveAnyConfig({ file: yamlFile('kind: dvea\n') }));
    assert.equal(error.message.endsWith('kind: unknown kind "dvea"; did you mean "dvae"?'), true, error.message);
  });
});

describe('config: writing', () => {
  it('the resolved YAML reads back to the same config, with docs and sources as comments', () => {
    const file = path.join(CONFIGS, 'prior-emoji.yaml');
    const { config, sources } = resolveConfigWithSources(priorConfig, { file, sets: ['runtime.seed=9'] });
    const text = formatConfigYaml(priorConfig, config, { sources });
    assert.match(text, /^kind: prior$/m);
    assert.match(text, /seed: 9 # .*\[from --set runtime\.seed=9\]/);
    assert.match(text, /n_layers: 8 # transformer blocks \(paper: 64\) \[from .*prior-emoji\.yaml:\d+\]/);
    assert.deepEqual(resolveConfig(priorConfig, { file: yamlFile(text) }), config);
  });

  it('writeRunConfig writes config.yaml atomically and readRunConfig reads it back', () => {
    const runDir = path.join(temporaryDir(), 'runs', 'demo');
    const config = resolveConfig(dvaeConfig, { file: path.join(CONFIGS, 'dvae-emoji.yaml'), sets: ['runtime.seed=3'] });
    const written = writeRunConfig(runDir, dvaeConfig, config);
    assert.equal(written, path.join(runDir, 'config.yaml'));
    assert.deepEqual(fs.readdirSync(runDir), ['config.yaml'], 'no temporary file is left behind');
    assert.deepEqual(readRunConfig(runDir, dvaeConfig), config);
    writeRunConfig(runDir, dvaeConfig, resolveConfig(dvaeConfig));
    assert.equal(readRunConfig(runDir, dvaeConfig).model.n_hid, 256, 'a second write replaces the first');
  });
});

describe('config: did you mean', () => {
  it('levenshtein counts insertions, deletions and substitutions', () => {
    assert.equal(levenshtein('', ''), 0);
    assert.equal(levenshtein('lr', 'lrr'), 1);
    assert.equal(levenshtein('kitten', 'sitting'), 3);
    assert.equal(levenshtein('abc', ''), 3);
  });

  it('closestMatch refuses far-off words', () => {
    assert.equal(closestMatch('n_hdi', ['n_hid', 'n_groups']), 'n_hid');
    assert.equal(closestMatch('qqqqqq', ['n_hid', 'n_groups']), undefined);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
