// The hash router: #/<view> picks one of the views app.js registers; without a
// session every route shows the login screen, and admin is for admins only.

import { $ } from "./dom.js";
import { isAdmin, state } from "./state.js";

let views = {};
let routed = false; // the first screen keeps the browser's default focus

/** The views by route name: each a function returning the screen's element. */
export function setViews(table) {
  views = table;
}

export function route() {
  let name = (location.hash.replace(/^#\/?/, "").split("/")[0]) || "";
  if (!state.me) name = "login";
  else if (!views[name] || name === "login") name = "upload";
  if (name === "admin" && !isAdmin()) name = "upload";
  state.view = name;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = $("#view");
  main.replaceChildren(views[name]());
  document.title = `File Dropbox — ${name[0].toUpperCase()}${name.slice(1)}`;
  // Move focus to the new screen's heading so keyboard and screen reader users land there.
  const heading = main.querySelector("h1");
  if (heading && routed) { heading.tabIndex = -1; heading.focus(); }
  routed = true;
}
