// Runs the gallery page's script against a minimal DOM stub, in server mode (fetch answers /api/marks) and in
// static mode (fetch fails as under file://, marks in localStorage): marks two pairs, "reloads" the page over
// the same server state / storage, and prints JSON of what the reloaded page shows. Usage: node gallery_page.js
// <gallery.html>. Used by tests/test_contamination_images.py.
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const src = html.match(/<script>([\s\S]*)<\/script>/)[1];
const pairIds = JSON.parse(src.match(/const PAIRS = (\[.*?\]);/)[1]);

function page(serverState, store) {
  const els = {counts: {innerHTML: ""}, mode: {textContent: ""}, download: {addEventListener() {}}};
  const pairs = pairIds.map(p => {
    const d = {dataset: {pair: p}, buttons: []};
    for (const m of ["duplicate", "same-source", "different", ""]) {
      const b = {dataset: {mark: m}, on: false, classList: {toggle(c, v) { b.on = v; }},
                 closest() { return d; }, addEventListener(_, f) { b.click = f; }};
      d.buttons.push(b);
    }
    d.querySelectorAll = () => d.buttons;
    return d;
  });
  const env = {
    document: {querySelectorAll: s => (s === ".pair" ? pairs : pairs.flatMap(p => p.buttons)),
               getElementById: id => els[id], createElement: () => ({click() {}})},
    localStorage: {getItem: k => (k in store ? store[k] : null), setItem: (k, v) => { store[k] = v; }},
    fetch: async (url, opts) => {
      if (serverState === null) throw new Error("file:// has no server");
      if (opts && opts.method === "POST") {
        const b = JSON.parse(opts.body);
        if (b.mark) serverState[b.pair] = {mark: b.mark}; else delete serverState[b.pair];
      }
      return {ok: true, json: async () => ({marks: serverState})};
    },
    alert: () => {}, URL: {createObjectURL: () => ""}, Blob: function () {},
  };
  new Function(...Object.keys(env), src)(...Object.values(env));
  return {pairs, els};
}
const tick = () => new Promise(r => setTimeout(r, 20));
const shown = p => Object.fromEntries(p.pairs.map(d => [d.dataset.pair, (d.buttons.find(b => b.on) || {dataset: {}}).dataset.mark || null]));
(async () => {
  const out = {};
  for (const mode of ["server", "static"]) {
    const state = mode === "server" ? {} : null, store = {};
    const first = page(state, store);
    await tick();
    await first.pairs[0].buttons[0].click();  // duplicate
    await first.pairs[1].buttons[1].click();  // same-source
    await first.pairs[2].buttons[2].click();  // different ...
    await first.pairs[2].buttons[3].click();  // ... cleared
    await tick();
    const again = page(state, store);  // reload
    await tick();
    out[mode] = {shown: shown(again), counts: again.els.counts.innerHTML, mode: again.els.mode.textContent};
  }
  console.log(JSON.stringify(out));
})();
