// Puts our entry in place of worker-build's default export in the built module (the file
// given, build/index.js by default). worker-build's shim exports the Worker as a class wrapped
// in a `Proxy` that builds an instance (and a `Proxy` around it, and one around its `fetch`) for
// every request, so that it can rebuild the wasm instance after a trap; measured by
// bench/profile.mjs, that was about a quarter of the memory store's CPU per request. Ours is a
// plain `{ fetch }` object that keeps the recovery: the shim's own `checkReinitialize()`
// before each request (a new instance after a trap) and `handleMaybeCritical()` on a throw.
// The names are those of worker-build's shim template (0.8.7, built with NO_MINIFY=1, as
// scripts/build does); the patch fails loudly if the text is not exactly as expected.
import { readFileSync, writeFileSync } from "node:fs";

const file = process.argv[2] ?? "build/index.js";
const text = readFileSync(file, "utf8");
const SHIM_DEFAULT = "var shim_default = new Proxy(Entrypoint, classProxyHooks);";
const OURS = `// scripts/entry.mjs: the Worker's entry, a plain object; the shim's recovery kept.
var shim_default = {
  fetch(request, env, ctx) {
    checkReinitialize();
    try {
      return Entrypoint.prototype.fetch.call({ env, ctx }, request);
    } catch (e) {
      handleMaybeCritical(e);
      throw e;
    }
  },
};`;
for (const needed of [SHIM_DEFAULT, "function checkReinitialize()", "function handleMaybeCritical(e)",
  "Entrypoint.prototype.fetch = function", "shim_default as default"]) {
  const n = text.split(needed).length - 1;
  if (n !== 1) {
    console.error(`scripts/entry.mjs: expected exactly one \`${needed}\` in ${file}, found ${n}: has worker-build's shim changed?`);
    process.exit(1);
  }
}
writeFileSync(file, text.replace(SHIM_DEFAULT, OURS));
console.log(`scripts/entry.mjs: ${file} exports the plain entry`);
