/**
 * Malformed YAML that the fuzzer (test/fuzz) found mishandled: thousands of mappings nested on one line took the yaml
 * package seconds per 100 KB to describe (it prettified every one of its errors, each by a scan from the top:
 * 25 s at the 1 MiB a config may have), and thousands nested over lines threw a bare RangeError.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, resolveAnyConfig } from '../src/core/config';

describe('config: malformed YAML at scale is a ConfigError, at once', () => {
  let dir: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-yaml-'));
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function refusal(name: string, text: string): { error: ConfigError; ms: number } {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    const started = Date.now();
    try {
      resolveAnyConfig({ file });
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return { error, ms: Date.now() - started };
    }
    assert.fail('the config was accepted');
  }

  it('80,000 mappings nested on one line (960 KB): the first error, naming its line and column, in under 5 s (not 25)', () => {
    const { error, ms } = refusal('compact.yaml', `kind: dvae\ntrain:\n  kl_ramp_steps: ${'ramp_steps: '.repeat(80_000)}5\n`);
    assert.ok(ms < 5000, `${ms} ms`);
    assert.equal(error.message, `${path.join(dir, 'compact.yaml')}:3:18: malformed YAML: Nested mappings are not allowed in compact mappings`);
    assert.match(error.hint ?? '', /^fix the YAML syntax here:\n {2}kl_ramp_steps: ramp_steps: ramp_steps: .*\n {17}\^$/);
  });

  it('thousands of nested block mappings, then a key of the section above, are "nested too deeply", not a RangeError', () => {
    const { error } = refusal('deep.yaml', `kind: prior\ntrain:\n  grad_scale:\n    ${'init:    '.repeat(4000)}init: 8192\n  lr: 1\n`);
    assert.match(error.message, /malformed YAML: nested too deeply to parse/);
  });
});
