// Runs one Worker in workerd through Miniflare until SIGTERM, in its own process so that the
// benchmark can read that workerd's CPU time. Usage: node serve.mjs '<json config>'.
//   config: { script, wasm (bool), bindings }
import { Miniflare } from "miniflare";

const cfg = JSON.parse(process.argv[2]);
const mf = new Miniflare({
  scriptPath: cfg.script,
  modules: true,
  modulesRules: cfg.wasm ? [{ type: "CompiledWasm", include: ["**/*.wasm"] }] : undefined,
  compatibilityDate: "2026-04-01",
  bindings: cfg.bindings,
  host: "127.0.0.1",
  port: 0,
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.on("data", (d) => process.stderr.write(d));
  },
});
const url = await mf.ready;
console.log(`READY ${url}`);
const stop = async () => { await mf.dispose(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
