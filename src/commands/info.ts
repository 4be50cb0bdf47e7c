import { BaseCommand } from '../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';
import type { EngineReport } from '../core/engine-info';

export default class InfoCommand extends BaseCommand<typeof InfoCommand> {
  static override summary = 'Show the engine on this machine: CPU kernels in use, threads, registered ops.';

  static override description =
    'Loads the native addon and reports which kernels it picked for this CPU (AVX-512, AVX2 or portable), whether ' +
    'AVX512_BF16 is there, the thread count (--threads or DALLE_THREADS; 0 = all cores) and every registered op. ' +
    'Include its --json output in bug reports.';

  static override examples = ['<%= config.bin %> <%= command.id %>', '<%= config.bin %> <%= command.id %> --threads 1 --json'];

  static override configUse: ConfigUse = { keys: ENGINE_KEYS };

  async run(): Promise<EngineReport> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../core/runtime');
    const { engineReport } = await import('../core/engine-info');
    applyRuntime(this.loadConfig(dvaeConfig).runtime);
    const report = engineReport();
    this.log(`dalle ${report.version} (node ${report.node}, ${report.platform})`);
    this.log(`CPU kernels: ${report.cpu.isa}${report.cpu.avx512bf16 ? ' + AVX512_BF16' : ''}`);
    this.log(`threads:     ${report.threads}`);
    const cuda = report.cudaStatus;
    this.log(`CUDA:        ${report.cuda ? cuda.devices.map((d) => `${d.name} (sm_${d.computeCapability.replace('.', '')})`).join(', ') : cuda.reason}`);
    const { formatCollectives, formatOpBackendTable } = await import('../core/engine-info');
    this.log(`collectives: ${formatCollectives(report.collectives)}`);
    this.log(`ops (${report.ops.length}): ${report.ops.join(', ')}`);
    // The CUDA column shows the built addon's kernels even without a GPU; the note says why none can run them here.
    this.log(`ops by backend:${report.opBackendsNote ? ` (cuda:0 is the built CUDA addon; ${report.opBackendsNote})` : ''}`);
    for (const line of formatOpBackendTable(report.opBackends)) this.log(`  ${line}`);
    return report;
  }
}
