/**
 * A stand-in for the CLI under `dalle launch` (DALLE_LAUNCH_TEST_CHILD=this file, compiled): it acts out what the
 * launcher must cope with, chosen by its arguments `TRAINER MODE ...`:
 *
 *   env                    prints its launch variables as one JSON line on stdout; on stderr a line and two lines in
 *                          one write, then (ranks > 0) a line in two writes and a last line without a newline; exits 0.
 *   fail R CODE [DELAY_MS] rank R exits CODE after DELAY_MS (100); a negative CODE kills itself with SIGKILL instead.
 *                          The others wait; on SIGTERM they print it and exit 143. Every rank prints `ready R` once
 *                          its handlers are in place.
 *   fail-alone R CODE      rank R exits CODE after 100 ms; the others exit 5 by themselves 400 ms later.
 *   fail-stubborn R CODE   as fail, but the others ignore SIGTERM (only SIGKILL ends them).
 *   signals                every rank prints ready and waits: the first SIGINT/SIGTERM is printed, the second
 *                          printed and answered with exit 128 + its number (the trainers' two-signal logic).
 *   signals-fail R CODE    as signals, but rank R exits CODE after 100 ms.
 */
import os from 'node:os';

// Never outlive a broken test by long: a child whose launcher is gone exits by itself.
setTimeout(() => process.exit(98), 30_000).unref();

const rank = Number(process.env.RANK);
const [, mode, ...rest] = process.argv.slice(2);
const say = (text: string): void => {
  process.stdout.write(`${text}\n`);
};
const waitForever = (): void => {
  setInterval(() => undefined, 1000);
};
const exitOnSigterm = (): void => {
  process.on('SIGTERM', () => {
    say(`rank ${rank} got SIGTERM`);
    process.exit(143);
  });
};

switch (mode) {
  case 'env': {
    const names = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'DALLE_LAUNCH', 'DALLE_LAUNCH_TEST_CHILD', 'DALLE_TEST_MARK'];
    say(JSON.stringify({ env: Object.fromEntries(names.map((name) => [name, process.env[name] ?? null])), args: process.argv.slice(2), pid: process.pid }));
    process.stderr.write(`stderr of rank ${rank}\n`);
    process.stderr.write('two lines\nin one write\n');
    // Rank 0's output is passed through as written, so only the prefixed ranks show how partial lines are joined.
    if (rank === 0) break;
    process.stderr.write('a line in ');
    setTimeout(() => {
      process.stderr.write('two writes\nno newline at the end');
    }, 50);
    break;
  }
  case 'fail':
  case 'fail-stubborn':
  case 'fail-alone': {
    const [failing, code, delay] = [Number(rest[0]), Number(rest[1]), Number(rest[2] ?? 100)];
    if (rank === failing) {
      setTimeout(() => (code < 0 ? process.kill(process.pid, 'SIGKILL') : process.exit(code)), delay);
    } else if (mode === 'fail-alone') {
      setTimeout(() => process.exit(5), delay + 400);
    } else if (mode === 'fail-stubborn') {
      process.on('SIGTERM', () => say(`rank ${rank} ignores SIGTERM`));
      waitForever();
    } else {
      exitOnSigterm();
      waitForever();
    }
    say(`ready ${rank}`); // after the handlers: a signal sent on seeing it finds them
    break;
  }
  case 'signals':
  case 'signals-fail': {
    if (mode === 'signals-fail' && rank === Number(rest[0])) {
      setTimeout(() => process.exit(Number(rest[1])), 100);
      break;
    }
    let seen = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      seen++;
      say(`rank ${rank} ${seen === 1 ? 'first' : 'second'} ${signal}`);
      if (seen === 2) process.exit(128 + (os.constants.signals[signal] ?? 0));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    say(`ready ${rank}`);
    waitForever();
    break;
  }
  default:
    process.stderr.write(`launch-child: unknown mode ${mode}\n`);
    process.exit(99);
}
