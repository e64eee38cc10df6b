// The wallboard (work in progress: the live tables arrive in the next commits).
import { session } from "./session.js";

session.ready.then((who) => {
  document.getElementById("status-line").textContent = `Logged in as ${who.name}.`;
});
