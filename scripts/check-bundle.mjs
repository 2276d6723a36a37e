// Checks what `wrangler deploy --dry-run --outdir <dir>` wrote against the Workers Free plan's
// size limit: 3 MiB for the Worker after gzip compression (the JS module and the wasm; static
// assets are uploaded separately and do not count). Prints the figures; exits 1 if over.
// Usage: node scripts/check-bundle.mjs <outdir>
import { readdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import path from "node:path";

const LIMIT = 3 * 1024 * 1024;
const dir = process.argv[2];
const files = readdirSync(dir).filter((f) => /\.(js|mjs|wasm)$/.test(f));
if (!files.some((f) => f.endsWith(".wasm")) || !files.some((f) => /\.m?js$/.test(f))) {
  console.error(`check-bundle: ${dir} lacks the Worker's module or its wasm: ${files.join(", ")}`);
  process.exit(1);
}
let raw = 0, gz = 0;
for (const f of files) {
  const bytes = readFileSync(path.join(dir, f));
  raw += bytes.length;
  gz += gzipSync(bytes, { level: 9 }).length;
}
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
const share = ((gz / LIMIT) * 100).toFixed(1);
console.log(`deployable bundle (${files.join(", ")}): ${kib(raw)} raw, ${kib(gz)} gzip; ` +
  `Workers Free plan limit 3 MiB after compression: ${share} % used`);
if (gz > LIMIT) {
  console.error("check-bundle: the Worker is larger than the Free plan allows");
  process.exit(1);
}
