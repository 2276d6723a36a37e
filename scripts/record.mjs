// What every measured page says about how it was measured: the command, the machine, the date,
// the commit, and how much of the machine other work took meanwhile. Used by every script or
// test that writes a measured table (bench/run.mjs, tests/e2e/faults.test.mjs,
// tests/e2e/upstash.test.mjs, tests/e2e/policy-change.test.mjs, scripts/check-bundle.mjs), so
// that no figure in docs/ or README.md is copied by hand.
//
// Tests always write their tables to build/; they write docs/ and README.md only when
// RECORD_DOCS=1 (`bash scripts/record`), so that a normal test run leaves tracked files alone.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const RECORD_DOCS = process.env.RECORD_DOCS === "1";

// ---- the machine -------------------------------------------------------------------------------
/** Clock ticks per second, the unit of /proc's CPU times. */
export const TICKS = (() => {
  try { return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100; } catch { return 100; }
})();

/** /proc/<pid>/stat: the command name and the fields after it (state first), or null. */
function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return { pid: Number(pid), comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), fields: stat.slice(stat.lastIndexOf(")") + 2).split(" ") };
  } catch { return null; }
}

/**
 * Every process now, as procStat gives it. In `fields`: [1] the parent, [3] the session,
 * [11] and [12] user and system time, [13] and [14] those of the children it has reaped.
 */
export function* processes() {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const p = procStat(entry);
    if (p) yield p;
  }
}

/**
 * CPU time so far, in clock ticks: the whole machine's busy time (/proc/stat) and that of the
 * processes of this run's session (this process, its children and the script that started
 * it, with the children they have already reaped).
 */
function cpuSnapshot() {
  const [, ...cpu] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = cpu;
  const session = procStat(process.pid)?.fields[3];
  let ours = 0;
  for (const { fields: f } of processes()) {
    if (f[3] === session) ours += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return { busy: user + nice + system + irq + softirq + steal, total: user + nice + system + idle + iowait + irq + softirq + steal, ours };
}

// The run starts when this module is loaded, or earlier: a script that measures before it
// starts node (scripts/bench runs the native benchmark first) takes a snapshot with
// `node scripts/record.mjs --start` and passes it on in RECORD_START.
const START = (() => {
  if (process.env.RECORD_START) {
    const s = JSON.parse(process.env.RECORD_START);
    return { ...s, at: new Date(s.at) };
  }
  return { at: new Date(), cpu: cpuSnapshot(), load: os.loadavg()[0] };
})();
// `--start`: print the snapshot (for RECORD_START); `--sharing`: print the line on other work
// since RECORD_START (scripts/bench keeps it for the native benchmark's table).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === "--start") console.log(JSON.stringify(START));
  if (process.argv[2] === "--sharing") console.log(sharing());
}

function distro() {
  try {
    return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "";
  } catch { return ""; }
}

/** One line on the machine: cores, CPU model, memory, system, kernel, Node. */
export function machine() {
  const cpus = os.cpus();
  const model = (cpus[0]?.model ?? "unknown CPU").replace(/\s+/g, " ").trim();
  const gib = (os.totalmem() / 2 ** 30).toFixed(1);
  return `${cpus.length} cores (${model}), ${gib} GiB, ${[distro(), `${os.type()} ${os.release()}`].filter(Boolean).join(", ")}, Node ${process.version}`;
}

/**
 * How much of the machine work outside this run took while it ran: the share of all cores'
 * time that was busy but not this run's, from /proc. Says whether the machine was shared.
 */
export function sharing() {
  const now = cpuSnapshot();
  const total = now.total - START.cpu.total;
  const others = Math.max(0, (now.busy - START.cpu.busy) - (now.ours - START.cpu.ours));
  const seconds = (ticks) => (ticks / TICKS).toFixed(0);
  if (total < TICKS) return ""; // under a core-second: too short to say
  const share = (others / total) * 100;
  const cores = os.cpus().length;
  const verdict = share < 5 ? "the machine was not shared to speak of" : "the machine was shared with other work";
  return `Other work on the machine during the run: ${share.toFixed(0)} % of its ${cores} cores' time ` +
    `(${seconds(others)} of ${seconds(total)} core-seconds; load average ${START.load.toFixed(2)} at the start): ${verdict}.`;
}

function commit() {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT }).toString().trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "bench", "tests", "local-upstash/src"], { cwd: ROOT }).toString().trim();
    return dirty ? `${head} with uncommitted changes` : head;
  } catch { return "unknown"; }
}

/** The date and time of the run's start, in UTC, to the minute. */
export const date = () => START.at.toISOString().slice(0, 16).replace("T", " ") + " UTC";

/**
 * The lines that head every measured page or section: generated by which command, on which
 * machine, when, at which commit, and whether the machine was shared.
 */
export function provenance(command) {
  const note = process.env.RECORD_NOTE ? ` ${process.env.RECORD_NOTE}` : "";
  return [
    `Generated by \`${command}\` on ${date()}, at commit ${commit()}.`,
    `Machine: ${machine()}.`,
    sharing() + note,
  ].filter(Boolean).join("\n");
}

/** What a test file says made it: `bash scripts/record` sets RECORD_COMMAND. */
export function testCommand(file) {
  return process.env.RECORD_COMMAND ?? `${RECORD_DOCS ? "RECORD_DOCS=1 " : ""}node --test ${path.relative(ROOT, file)}`;
}

// ---- writing -----------------------------------------------------------------------------------
const warning = (command) => `<!-- Generated by \`${command}\`: do not edit by hand, run it again. -->`;

/** Writes a whole generated page (relative to the repository), with the provenance on top. */
export function writePage(rel, { title, command, body }) {
  const file = path.join(ROOT, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${warning(command)}\n# ${title}\n\n${provenance(command)}\n\n${body.trim()}\n`);
  return file;
}

/**
 * Replaces what stands between `<!-- name -->` and `<!-- /name -->` in a file (relative to the
 * repository). When the file does not exist it is made from `skeleton` (a page that holds the
 * markers); markers that are missing are an error, never a silent append.
 */
export function replaceSection(rel, name, text, skeleton) {
  const file = path.join(ROOT, rel);
  if (!existsSync(file)) {
    if (!skeleton) throw new Error(`${rel} is missing`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, skeleton);
  }
  const page = readFileSync(file, "utf8");
  const open = `<!-- ${name} -->`, close = `<!-- /${name} -->`;
  const a = page.indexOf(open), b = page.indexOf(close);
  if (a < 0 || b < a) throw new Error(`${rel} lacks the markers ${open} ... ${close}`);
  writeFileSync(file, page.slice(0, a + open.length) + "\n" + text.trim() + "\n" + page.slice(b));
  return file;
}

/** A section with its own provenance, for a page that several test files write a part of. */
export function writeSection(rel, name, { command, body, skeleton }) {
  return replaceSection(rel, name, `${provenance(command)}\n\n${body.trim()}`, skeleton);
}

/** Rewrites README.md's figure lines between `<!-- figures:name -->` markers. */
export function writeReadmeFigures(name, lines) {
  return replaceSection("README.md", `figures:${name}`, lines.join("\n"));
}

/** A markdown table from a header row and rows (arrays of cells). */
export function mdTable(head, rows) {
  const line = (cells) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
}

/**
 * Writes a test file's section of a page that several test files share: always into
 * build/<page>, and into docs/results/<page> when RECORD_DOCS=1 and `complete` (every test
 * behind it passed). Returns whether docs/ was written.
 */
export function recordSection(page, name, { command, body, skeleton, complete }) {
  writeSection(path.join("build", page), name, { command, body, skeleton });
  if (!RECORD_DOCS) return false;
  if (!complete) {
    console.log(`# RECORD_DOCS: not every measurement of ${name} passed: docs/results/${page} left as it was`);
    return false;
  }
  writeSection(path.join("docs/results", page), name, { command, body, skeleton });
  return true;
}

/** docs/results/store-claims.md: one section per test file that measures a claim of docs/store.md. */
export const STORE_CLAIMS = {
  page: "store-claims.md",
  skeleton: [
    "<!-- Generated: each section by the command it names (`bash scripts/record` runs them all); do not edit by hand. -->",
    "# The Upstash store's claims: measured",
    "",
    "What each claim means and how the tests show it: [../store.md](../store.md#the-upstash-store). Every figure below is what the",
    "test observed in the run its section names; the test's assertions held for every row.",
    "",
    "## Two Workers on one Upstash (`tests/e2e/upstash.test.mjs`)",
    "",
    "<!-- claims:upstash -->",
    "<!-- /claims:upstash -->",
    "",
    "## A policy change under live keys (`tests/e2e/policy-change.test.mjs`)",
    "",
    "<!-- claims:policy-change -->",
    "<!-- /claims:policy-change -->",
    "",
  ].join("\n"),
};
