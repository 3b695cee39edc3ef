// Drives the adjudication gallery in headless Chromium through puppeteer-core (no browser download: the system
// chromium is given). Usage: node gallery_browser.js <chromium> <url> <fresh user-data-dir>. Prints one JSON line
// with what the page showed. Used by tests/test_contamination_copies.py (served over HTTP and opened from disk).
const puppeteer = require("puppeteer-core");

const [chromium, url, profile] = process.argv.slice(2);
const sleep = ms => new Promise(r => setTimeout(r, ms));

(async () => {
  const browser = await puppeteer.launch({
    executablePath: chromium, headless: true, userDataDir: profile,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run"],
  });
  const out = {};
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1400, height: 1000});
    const ready = async () => page.waitForSelector("body[data-ready='1']", {timeout: 30000});
    await page.goto(url, {waitUntil: "load"});
    await ready();
    out.total = await page.evaluate(() => ALL.length);
    out.first_page = await page.$$eval("#pairs .pair", d => d.length);
    out.pages = await page.evaluate(() => Math.ceil(view.length / perPage()));
    // filter by automatic label
    await page.select("#f-auto", "duplicate");
    out.filtered_duplicate = await page.evaluate(() => view.length);
    out.all_duplicate_labels = await page.$$eval("#pairs .pair .auto", d => d.every(x => x.textContent === "duplicate"));
    await page.select("#f-auto", "");
    // sort by similarity, descending
    await page.select("#sort", "sim-desc");
    const sims = await page.evaluate(() => view.map(p => (p.similarity === null ? -Infinity : p.similarity)));
    out.sorted_by_similarity = sims.every((x, i) => i === 0 || sims[i - 1] >= x);
    await page.select("#sort", "label");
    // paging with the keyboard
    const firstId = await page.$eval("#pairs .pair", d => d.dataset.pair);
    await page.keyboard.press("n");
    out.page2_first_differs = (await page.$eval("#pairs .pair", d => d.dataset.pair)) !== firstId;
    await page.keyboard.press("p");
    // the aligned view and the difference image of the first page
    await sleep(300);
    out.aligned_images_loaded = await page.$$eval("#pairs img[alt='aligned reference']",
                                                  d => d.filter(i => i.complete && i.naturalWidth > 0).length);
    // neighbours of the focused pair, on demand
    await page.keyboard.press("t");
    await sleep(300);
    out.neighbours_shown = await page.$$eval("#pairs .pair.focus .nbrs:not([hidden]) img",
                                             d => d.filter(i => i.complete && i.naturalWidth > 0).length);
    await page.keyboard.press("t");
    // three marks by keyboard: 1, 2, 3 on the first three pairs (focus advances after each)
    out.keys_marked = await page.$$eval("#pairs .pair", d => d.slice(0, 3).map(x => x.dataset.pair));
    for (const k of ["1", "2", "3"]) { await page.keyboard.press(k); await sleep(250); }
    await sleep(500);
    await page.reload({waitUntil: "load"});
    await ready();
    out.marked_after_reload = await page.evaluate(() => Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, v.mark])));
    out.counts_text = await page.$eval("#counts", d => d.textContent);
    out.mode_text = await page.$eval("#mode", d => d.textContent);
    // the buttons of a marked pair show its mark after the reload
    out.buttons_on = await page.$$eval("#pairs .pair button.mark.on", d => d.map(b => b.dataset.mark));
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e && e.stack || String(e)); process.exit(1); });
