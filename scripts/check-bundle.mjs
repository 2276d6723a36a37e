// Checks what `wrangler deploy --dry-run --outdir <dir>` wrote against the Workers Free plan's
// size limit: 3 MiB for the Worker after gzip compression (the JS module and the wasm; static
// assets are uploaded separately and do not count). Prints the figures; exits 1 if over.
// Writes them, with the release wasm's size, to build/bundle.md; with RECORD_DOCS=1 (`bash
// scripts/record`) also to docs/results/bundle.md and README.md's figure line.
// Usage: node scripts/check-bundle.mjs <outdir>
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import path from "node:path";
import { RECORD_DOCS, ROOT, date, mdTable, writePage, writeReadmeFigures } from "./record.mjs";

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

// The page: the bundle, the wasm in it, and what wrangler itself said.
const wasmFile = path.join(ROOT, "build/index_bg.wasm");
const wasm = existsSync(wasmFile) ? readFileSync(wasmFile) : null;
const wasmGz = wasm ? gzipSync(wasm, { level: 9 }).length : 0;
const log = path.join(path.dirname(path.resolve(dir)), "dry-run.log");
const wrangler = existsSync(log) ? /Total Upload: ([^\n]*)/.exec(readFileSync(log, "utf8"))?.[1]?.trim() : null;
const en = (n) => n.toLocaleString("en");
const command = process.env.RECORD_COMMAND ?? `node scripts/check-bundle.mjs ${dir}`;
const rows = [
  ["release wasm (`worker-build --release`: `opt-level = \"z\"`, LTO, one codegen unit, stripped, no wasm-opt)",
    wasm ? `${en(wasm.length)} B raw, ${en(wasmGz)} B gzip -9 (zlib)` : "build/index_bg.wasm is missing"],
  [`deployable bundle (\`wrangler deploy --dry-run\`: ${files.join(", ")})`, `${kib(raw)} raw, ${kib(gz)} gzip -9 (zlib)`],
  ["share of the Workers Free plan's 3 MiB after compression", `${share} %`],
  ...(wrangler ? [["wrangler's own report (static assets excluded)", `Total Upload: ${wrangler}`]] : []),
];
const page = { title: "Sizes: measured", command, body: mdTable(["what", "size"], rows) };
writePage("build/bundle.md", page);
if (RECORD_DOCS) {
  writePage("docs/results/bundle.md", page);
  writeReadmeFigures("bundle", [
    `- Release wasm: ${wasm ? `${en(wasm.length)} B raw, ${en(wasmGz)} B gzip -9 (zlib)` : "not built"}; the deployable bundle ${share} % of the Free plan's limit ` +
      `(\`${command}\`, ${date().slice(0, 10)}) — [docs/results/bundle.md](docs/results/bundle.md)`,
  ]);
}
if (gz > LIMIT) {
  console.error("check-bundle: the Worker is larger than the Free plan allows");
  process.exit(1);
}
