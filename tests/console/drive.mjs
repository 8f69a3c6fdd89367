// Drives facegate's console in real headless chromium, as an operator would: a wrong key is
// shown as such, then the right key signs in; a photo is enrolled, another photo of the same
// person searched and its candidate seen; identify draws the faces. Exit code 0 = all seen.
// Usage: node drive.mjs BASE_URL KEY ENROL_PHOTO SEARCH_PHOTO SCREENSHOT.png PROFILE_DIR
import { chromium } from "playwright-core";

const [base, key, enrolPhoto, searchPhoto, screenshot, profile] = process.argv.slice(2);
const fail = (m) => { console.error("FAIL: " + m); process.exitCode = 1; };

const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1200, height: 1300 },
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const calls = [];
  page.on("request", (r) => calls.push(new URL(r.url()).pathname));
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(base + "/console");

  await page.fill("#key", "not-the-right-key-000000");
  await page.click("#signin-form button");
  await page.waitForSelector("#signin-error:not([hidden])", { timeout: 10000 });
  const wrong = await page.textContent("#signin-error");
  if (!/wrong api key/i.test(wrong)) fail("a wrong key is not shown as such: " + wrong);
  console.log("wrong key shown: " + wrong.trim());

  await page.fill("#key", key);
  await page.click("#signin-form button");
  await page.waitForSelector("#app:not([hidden])", { timeout: 10000 });
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  if (stored.includes(key)) fail("the key was stored outside the page's memory");

  await page.fill("#new-partition", "desk");
  await page.setInputFiles("#file", enrolPhoto);
  await page.fill("#subject", "obama");
  await page.click("#do-enrol");
  await page.waitForSelector("#status.ok", { timeout: 30000 });
  console.log("enrol: " + (await page.textContent("#status")));
  await page.waitForFunction(() => [...document.querySelectorAll("#stats td")].some((td) => td.textContent === "desk"));

  await page.setInputFiles("#file", searchPhoto);
  await page.waitForFunction(() => document.getElementById("canvas").width > 10);
  await page.click("#do-search");
  await page.waitForFunction(() => /candidate/.test(document.getElementById("status").textContent), null, { timeout: 30000 });
  const result = await page.textContent("#result");
  console.log("search: " + (await page.textContent("#status")) + " | " + result);
  if (!/obama/.test(result)) fail("the enrolled subject is not the search's candidate: " + result);
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.click("#do-identify");
  await page.waitForFunction(() => /face\(s\) detected/.test(document.getElementById("status").textContent), null, { timeout: 30000 });
  const faces = await page.textContent("#result");
  console.log("identify: " + faces);
  if (!/match/.test(faces) || !/obama/.test(faces)) fail("identify does not show obama's face as a match: " + faces);

  const foreign = calls.filter((p) => !p.startsWith("/api/v1/") && !p.startsWith("/console"));
  if (foreign.length) fail("the console called more than the public API: " + foreign.join(", "));
  if (!process.exitCode) console.log("console OK");
} finally {
  await context.close();
}
