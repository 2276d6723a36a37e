// Runs one Worker in workerd through Miniflare until SIGTERM, in its own process so that the
// benchmark can read that workerd's CPU time. Usage: node serve.mjs '<json config>'.
//   config: { script, wasm (bool), bindings }
import { Miniflare } from "miniflare";
import { workerOptions } from "../tests/e2e/harness.mjs";

const cfg = JSON.parse(process.argv[2]);
const mf = new Miniflare(workerOptions({
  script: cfg.script,
  wasm: cfg.wasm,
  bindings: cfg.bindings,
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.on("data", (d) => process.stderr.write(d));
  },
}));
const url = await mf.ready;
console.log(`READY ${url}`);
const stop = async () => { await mf.dispose(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
