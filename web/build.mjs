// Copies the vendored front-end assets from node_modules into static/vendor, so the app serves
// every asset itself and no page ever loads anything from outside the box.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "static", "vendor");
mkdirSync(vendor, { recursive: true });
const assets = [["htmx.org/dist/htmx.min.js", "htmx.min.js"]];
for (const [from, to] of assets) {
  copyFileSync(join(here, "node_modules", from), join(vendor, to));
  console.log(`static/vendor/${to}`);
}
