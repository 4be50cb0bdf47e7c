// Scopes: every tensor created while a scope is open is disposed when the scope closes, except the ones the scope's
// function returns and the ones marked with keep(). This keeps a training loop's memory flat without a dispose per
// intermediate (tfjs's tidy, the same idea as a region allocator).
export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

const scopes: Set<Disposable>[] = [];
const kept = new WeakSet<Disposable>();

export function track<T extends Disposable>(t: T): T {
  const top = scopes[scopes.length - 1];
  if (top && !kept.has(t)) top.add(t);
  return t;
}

/** Removes t from every open scope: it lives until disposed explicitly (parameters, optimizer state, caches). */
export function keep<T extends Disposable>(t: T): T {
  kept.add(t);
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(value: unknown, out: Set<Disposable>, depth = 0): void {
  if (value === null || value === undefined || depth > 4) return;
  if (typeof value !== 'object') return;
  if (typeof (value as Disposable).dispose === 'function' && 'disposed' in (value as object)) {
    out.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, depth + 1);
    return;
  }
  if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as object)) collect(v, out, depth + 1);
  }
}

/**
 * Runs fn in a scope. Tensors created inside are disposed at the end, except those in fn's result (a tensor, or
 * arrays / plain objects / Maps holding tensors), which move to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw err;
  }
  scopes.pop();
  if (result instanceof Promise) throw new Error('dalle: tidy() takes a synchronous function (await outside it)');
  const survivors = new Set<Disposable>();
  collect(result, survivors);
  for (const t of scope) {
    if (survivors.has(t)) track(t);
    else t.dispose();
  }
  return result;
}

/** How many scopes are open (for tests). */
export function scopeDepth(): number {
  return scopes.length;
}
