// The login screen: a log-in and a sign-up form side by side.

import * as api from "../api.js";
import { busy, errorBox, h } from "../dom.js";
import { route } from "../router.js";
import { startSession, state } from "../state.js";

function credentialsForm(kind) {
  const id = kind;
  const err = errorBox();
  const submit = h("button", { type: "submit" }, kind === "login" ? "Log in" : "Create account");
  const form = h("form", { class: "card", id: `${id}-form`, "aria-labelledby": `${id}-title`, novalidate: true },
    h("h2", { id: `${id}-title` }, kind === "login" ? "Log in" : "Sign up"),
    h("label", { for: `${id}-user` }, "User name"),
    h("input", { id: `${id}-user`, name: "user_name", autocomplete: "username", required: true,
      minlength: 3, maxlength: 64, pattern: "[A-Za-z0-9_.\\-]+", autocapitalize: "off", spellcheck: "false" }),
    kind === "signup" ? h("p", { class: "hint", id: `${id}-user-hint` }, "3–64 letters, digits, _ . -") : null,
    h("label", { for: `${id}-password` }, "Password"),
    h("input", { id: `${id}-password`, name: "password", type: "password", required: true,
      autocomplete: kind === "login" ? "current-password" : "new-password", minlength: kind === "signup" ? 8 : null }),
    kind === "signup" ? h("p", { class: "hint" }, "At least 8 characters.") : null,
    err, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = form.user_name.value.trim();
    const password = form.password.value;
    if (!user || !password) { err.show(new Error("Enter a user name and a password.")); return; }
    busy(submit, err, async () => {
      const r = kind === "login" ? await api.login(user, password) : await api.signup(user, password);
      const identity = await api.validate().catch(() => r);
      await startSession({ ...r, ...identity });
      if (location.hash === "#/upload") route(); else location.hash = "#/upload";
    });
  });
  return form;
}

export function viewLogin() {
  const msg = state.loginMessage;
  state.loginMessage = "";
  return h("section", { class: "login" },
    h("h1", {}, "Welcome to File Dropbox"),
    msg ? h("p", { class: "info", role: "status" }, msg) : null,
    h("div", { class: "grid two" }, credentialsForm("login"), credentialsForm("signup")));
}
