// Playwright tests of the dashboard (issue 9): a real `stemedb serve` on a fresh data directory,
// Debian's Chromium driven by playwright-core. Run: `npm test` in tests/dashboard after
// `cargo build` (the binary comes from $STEMEDB_BIN or target/debug/stemedb). Screenshots go to
// $ARTIFACTS (default target/artifacts).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.STEMEDB_BIN || join(ROOT, "target/debug/stemedb");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS || join(ROOT, "target/artifacts");
const TOKEN = "dashboard-test-token";
const SUBJECT = "kb/services/billing-api/owner";

let server, url, browser, work;

const freePort = () => new Promise((ok, fail) => {
  const s = createServer();
  s.on("error", fail);
  s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => ok(port)); });
});

function cli(...args) {
  const r = spawnSync(BIN, args, { encoding: "utf8" });
  assert.equal(r.status, 0, `stemedb ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Signs `statement` with a new key through `stemedb sign` and posts it. */
async function assertAs(name, statement) {
  const key = join(work, `${name}.pem`);
  if (!existsSync(key)) cli("keygen", "--out", key);
  const file = join(work, `${name}-${Date.now()}-${Math.random()}.json`);
  writeFileSync(file, JSON.stringify(statement));
  const envelope = cli("sign", "--key", key, file);
  const r = await fetch(`${url}/v1/assert`, { method: "POST", headers: { "Content-Type": "application/json" }, body: envelope });
  const text = await r.text();
  assert.ok(r.status < 300, `assert: ${r.status} ${text}`);
  return JSON.parse(text);
}

before(async () => {
  assert.ok(existsSync(BIN), `build the server first: ${BIN} is missing`);
  assert.ok(existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM} (apt-get install chromium)`);
  work = mkdtempSync(join(tmpdir(), "stemedb-dash-"));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  server = spawn(BIN, ["serve", "--data-dir", join(work, "data"), "--listen", `127.0.0.1:${port}`, "--log", "warn"],
    { env: { ...process.env, STEMEDB_ADMIN_TOKEN: TOKEN }, stdio: ["ignore", "ignore", "inherit"] });
  for (let i = 0; ; i++) {
    try { if ((await fetch(`${url}/v1/ready`)).ok) break; } catch { /* not up yet */ }
    assert.ok(i < 600, "server did not become ready");
    await new Promise((r) => setTimeout(r, 50));
  }
  // Three agents disagree about one subject: two say payments, the latest says growth.
  await assertAs("alice", { subject: SUBJECT, predicate: "team", object: "payments", ts: 1_700_000_000_000, confidence: 0.9 });
  await assertAs("bob", { subject: SUBJECT, predicate: "team", object: "payments", ts: 1_700_000_001_000, confidence: 0.7 });
  await assertAs("carol", { subject: SUBJECT, predicate: "team", object: "growth", ts: 1_700_000_002_000, confidence: 0.95 });
  // Dated a day ahead of the server clock: held in quarantine.
  const held = await assertAs("mallory", { subject: "kb/services/billing-api/owner", predicate: "team", object: "nobody", ts: Date.now() + 86_400_000 });
  assert.equal(held.status, "quarantined");
  // A fresh user-data-dir (Playwright passes it as --user-data-dir), and no network beyond the server.
  browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "chromium-")), {
    executablePath: CHROMIUM,
    viewport: { width: 1280, height: 800 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

/** Waits until the assertion view has its statement (the fetch behind it has answered). */
const loaded = (page) =>
  page.waitForFunction(() => document.getElementById("assertion-statement").textContent.length > 0);

async function newPage() {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  return { page, errors };
}

test("a query shows the winner, the conflict and the alternatives; the page verifies inclusion", async () => {
  const { page, errors } = await newPage();
  await page.goto(url + "/");
  assert.equal(await page.title(), "StemeDB");
  await page.getByLabel("Subject").fill(SUBJECT);
  await page.getByLabel("Lens").selectOption("consensus");
  await page.getByRole("button", { name: "Search" }).click();
  const row = page.locator("#results tbody tr");
  await row.first().waitFor();
  assert.equal(await row.count(), 1);
  const cells = row.first().locator("td");
  assert.equal(await cells.nth(0).textContent(), SUBJECT);
  assert.match(await cells.nth(2).textContent(), /"payments"/);
  assert.equal(await cells.nth(7).textContent(), "conflict");
  assert.match(await cells.nth(6).textContent(), /^\d+%$/);
  assert.equal(await cells.nth(8).locator("button").count(), 2);
  // Each alternative with its value, agent and time.
  const alts = await cells.nth(8).locator(".alt").allTextContents();
  assert.equal(alts.length, 2);
  assert.ok(alts.some((t) => /"growth" [0-9a-f]{12}… 2023-11-14T22:13:22\.000Z/.test(t)), alts.join(" | "));
  assert.ok(alts.some((t) => /"payments" [0-9a-f]{12}… 2023-11-14T22:13:2[01]\.000Z/.test(t)), alts.join(" | "));
  assert.match(page.url(), /\?subject=kb%2Fservices%2Fbilling-api%2Fowner&match=exact&lens=consensus$/);
  // Live stats come from the API.
  await page.waitForFunction(() => document.getElementById("stat-tree").textContent === "3");
  await page.waitForFunction(() => document.getElementById("stat-quarantine").textContent === "1");
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-query.png"), fullPage: true });

  // Open the winner and verify its inclusion in the browser.
  await cells.nth(2).getByRole("button").click();
  await page.locator("#assertion-view").waitFor({ state: "visible" });
  await loaded(page);
  assert.match(await page.locator("#assertion-statement").textContent(), /"object": "payments"/);
  await page.getByRole("button", { name: "Verify inclusion" }).click();
  const result = page.locator("#verify-result");
  await page.waitForFunction(() => /Verified|Not verified/.test(document.getElementById("verify-result").textContent));
  assert.match(await result.textContent(), /^Verified in this browser: .* is leaf \d+ of the tree of size 3 /);
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-verified.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test("a forged proof or checkpoint is refused by the page", async () => {
  const { page } = await newPage();
  const answer = await (await fetch(`${url}/v1/query?subject=${encodeURIComponent(SUBJECT)}&lens=latest`)).json();
  const id = answer.results[0].winner.id;
  // The audit path of another leaf: the computed root no longer matches the signed one.
  await page.route("**/v1/proof/inclusion*", async (route) => {
    const r = await route.fetch();
    const p = await r.json();
    p.audit_path = p.audit_path.map((h) => h.replace(/^./, (c) => (c === "0" ? "1" : "0")));
    await route.fulfill({ response: r, json: p });
  });
  await page.goto(`${url}/?id=${id}`);
  await loaded(page);
  await page.getByRole("button", { name: "Verify inclusion" }).click();
  await page.waitForFunction(() => /Verified|Not verified/.test(document.getElementById("verify-result").textContent));
  assert.match(await page.locator("#verify-result").textContent(), /^Not verified: the proof does not lead to the signed root/);
  await page.unroute("**/v1/proof/inclusion*");
  // A checkpoint whose signature does not match its text.
  await page.route("**/v1/checkpoint", async (route) => {
    const r = await route.fetch();
    const text = (await r.text()).replace(/^(.*\n)(\d+)\n/, (_, o, n) => `${o}${Number(n) + 1}\n`);
    await route.fulfill({ response: r, body: text });
  });
  await page.getByRole("button", { name: "Verify inclusion" }).click();
  await page.waitForFunction(() => /Not verified: the checkpoint/.test(document.getElementById("verify-result").textContent));
  await page.close();
});

test("deep links run the query, and the latest lens picks the newest claim", async () => {
  const { page } = await newPage();
  await page.goto(`${url}/?subject=${encodeURIComponent(SUBJECT)}&lens=latest`);
  const cells = page.locator("#results tbody tr").first().locator("td");
  await cells.first().waitFor();
  assert.match(await cells.nth(2).textContent(), /"growth"/);
  assert.equal(await page.getByLabel("Lens").inputValue(), "latest");
  assert.equal(await page.getByLabel("Subject").inputValue(), SUBJECT);
  await page.goto(`${url}/?subject=kb/services&match=prefix&lens=raw`);
  await page.locator("#results tbody tr").nth(2).waitFor();
  assert.equal(await page.locator("#results tbody tr").count(), 3);
  await page.close();
});

test("valid at: only what held then, from the form and from a deep link", async () => {
  const subject = "kb/teams/platform/lead";
  await assertAs("alice", { subject, predicate: "name", object: "ana", ts: 1_700_000_000_000,
    valid_from: Date.parse("2020-01-01T00:00:00Z"), valid_until: Date.parse("2023-01-01T00:00:00Z") });
  await assertAs("alice", { subject, predicate: "name", object: "bo", ts: 1_700_000_001_000,
    valid_from: Date.parse("2023-01-01T00:00:00Z") });
  const { page, errors } = await newPage();
  const winner = async () => {
    await page.waitForFunction(() => /result|No results|failed|Valid at/.test(document.getElementById("query-status").textContent)
      && document.getElementById("query-status").textContent !== "Searching…");
    const rows = page.locator("#results tbody tr");
    return (await rows.count()) && !(await page.locator("#results").isHidden()) ? (await rows.first().locator("td").nth(2).textContent()) : null;
  };
  await page.goto(`${url}/?subject=${encodeURIComponent(subject)}`);
  assert.match(await winner(), /"bo"/);
  await page.getByLabel("Valid at").fill("2021-06-01");
  await page.getByRole("button", { name: "Search" }).click();
  assert.match(await winner(), /"ana"/);
  assert.match(await page.locator("#results-caption").textContent(), /valid at 2021-06-01T00:00:00\.000Z/);
  assert.match(page.url(), /valid_at=2021-06-01/);
  await page.getByLabel("Valid at").fill("2019-01-01T00:00Z");
  await page.getByRole("button", { name: "Search" }).click();
  assert.equal(await winner(), null);
  assert.equal(await page.locator("#query-status").textContent(), "No results");
  await page.getByLabel("Valid at").fill("now");
  await page.getByRole("button", { name: "Search" }).click();
  assert.match(await winner(), /"bo"/);
  assert.match(await page.locator("#results-caption").textContent(), /holding now/);
  await page.getByLabel("Valid at").fill("someday");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction(() => /not a date/.test(document.getElementById("query-status").textContent));
  // A deep link with valid_at fills the field and runs the query.
  await page.goto(`${url}/?subject=${encodeURIComponent(subject)}&valid_at=${Date.parse("2022-03-01T00:00:00Z")}`);
  assert.match(await winner(), /"ana"/);
  assert.equal(await page.getByLabel("Valid at").inputValue(), String(Date.parse("2022-03-01T00:00:00Z")));
  assert.deepEqual(errors, []);
  await page.close();
});

test("every form control has a label, and the search works from the keyboard alone", async () => {
  const { page } = await newPage();
  await page.goto(url + "/");
  for (const id of ["subject", "match", "lens", "valid-at", "token"]) {
    const label = await page.locator(`label[for="${id}"]`).count();
    assert.equal(label, 1, `control #${id} has no label`);
  }
  await page.locator("#subject").focus();
  await page.keyboard.type(SUBJECT);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "match");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "lens");
  await page.keyboard.press("ArrowDown"); // trusted
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "valid-at");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "search");
  await page.keyboard.press("Enter");
  await page.locator("#results tbody tr").first().waitFor();
  assert.match(page.url(), /lens=trusted/);
  // On to the winner's id and open it with the keyboard.
  await page.locator("#results tbody tr td button").first().focus();
  await page.keyboard.press("Enter");
  await page.locator("#assertion-view").waitFor({ state: "visible" });
  await page.waitForFunction(() => document.activeElement.id === "assertion-title");
  await page.close();
});

test("the quarantine page lists held assertions for an admin and releases one", async () => {
  const { page } = await newPage();
  await page.goto(url + "/?view=quarantine");
  await page.getByLabel("Admin token").fill("wrong-token");
  await page.getByRole("button", { name: "Load quarantine" }).click();
  await page.waitForFunction(() => /Cannot load/.test(document.getElementById("quarantine-status").textContent));
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.getByRole("button", { name: "Load quarantine" }).click();
  await page.waitForFunction(() => document.getElementById("quarantine-status").textContent === "1 held");
  const row = page.locator("#quarantine-table tbody tr");
  assert.match(await row.first().textContent(), /ahead of the server clock/);
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-quarantine.png"), fullPage: true });
  const before = (await (await fetch(`${url}/v1/ready`)).json()).tree_size;
  await row.first().getByRole("button", { name: /^Release/ }).click();
  await page.waitForFunction(() => document.getElementById("quarantine-status").textContent === "0 held");
  const tree = await (await fetch(`${url}/v1/ready`)).json();
  // The released assertion joined the log (the other tests' writes are already in `before`).
  assert.equal(tree.tree_size, before + 1);
  await page.close();
});
