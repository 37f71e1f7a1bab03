// The dashboard's entry: wires the session, the router and the views together.
//
//   dom.js     DOM helpers (h(), notices, error boxes)
//   state.js   the one state object and the session (login, logout, gateway connection)
//   router.js  the hash router
//   views/     one module per screen; each may export what it does with gateway pushes
//   api.js     HTTP and Socket.IO access; upload.js: chunked uploads

import * as api from "./api.js";
import { $, h } from "./dom.js";
import { route, setViews } from "./router.js";
import { endSession, setSessionHooks, startSession, state } from "./state.js";
import * as admin from "./views/admin.js";
import * as history from "./views/history.js";
import * as login from "./views/login.js";
import * as pools from "./views/pools.js";
import * as upload from "./views/upload.js";

setViews({ login: login.viewLogin, upload: upload.viewUpload, history: history.viewHistory,
  pools: pools.viewPools, admin: admin.viewAdmin });

setSessionHooks({
  fileStatus(msg) {
    if (!msg || !msg.file_id) return;
    upload.onFileStatus(msg);
    history.onFileStatus(msg);
    admin.onFileStatus(msg);
  },
  poolResult: pools.onPoolResult,
  groupStatus: pools.onGroupStatus,
  rerender: route,
});

async function boot() {
  api.setUnauthorizedHandler(() => {
    if (state.me) endSession("Your session has ended; please log in again.");
  });
  $("#logout").addEventListener("click", async () => {
    // Close the socket first: the server drops it on logout, which must not look like a lost session.
    state.gateway?.close();
    state.gateway = null;
    await api.logout();
    endSession("You are logged out.");
  });
  window.addEventListener("hashchange", route);
  try {
    await api.loadConfig();
  } catch (e) {
    $("#view").replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  if (api.session.get()) {
    try {
      await startSession(await api.validate());
    } catch {
      api.session.clear();
    }
  }
  route();
}

// Exposed for the browser tests and for debugging in the console.
window.dropbox = { state, api };
boot();
