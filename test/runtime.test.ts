import * as assert from 'node:assert';
import { native } from '../src/core/native';
import { DeviceUnavailableError, applyRuntime } from '../src/core/runtime';

describe('runtime', () => {
  it('sizes the thread pool from the config (0 = all cores) and refuses a device it does not have', () => {
    const before = native.numThreads();
    try {
      assert.strictEqual(applyRuntime({ threads: 1, device: 'cpu' }).threads, 1);
      assert.ok(applyRuntime({ threads: 0, device: 'cpu' }).threads >= 1);
      assert.throws(() => applyRuntime({ threads: 1, device: 'cuda' }), DeviceUnavailableError);
    } finally {
      native.setThreads(before);
    }
  });
});
