// Headless Vega: compile a filled Vega-Lite spec (stdin) with the vendored scripts and print, as JSON, the
// pixel points of every line mark in drawing order. tests/test_dvc_plots.py uses it to check that the ROC/PR
// templates draw points in the data's order. Usage: node tests/vega_lines.js plots-template/vendor < spec.json
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const vendor = process.argv[2];
for (const name of ["vega.min.js", "vega-lite.min.js"]) {
  // run as plain scripts: the UMD builds then define globalThis.vega / globalThis.vegaLite
  vm.runInThisContext(fs.readFileSync(path.join(vendor, name), "utf8"), { filename: name });
}

function lines(scene, out) {
  if (scene.marktype === "line") {
    out.push(scene.items.map((item) => [item.x, item.y]));
  }
  for (const item of scene.items || []) {
    for (const child of item.items || []) lines(child, out);
  }
  return out;
}

const spec = JSON.parse(fs.readFileSync(0, "utf8"));
const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: "none" });
view.runAsync().then(() => {
  process.stdout.write(JSON.stringify(lines(view.scenegraph().root, [])));
});
