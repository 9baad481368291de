// orderwatch console: times in the reader's time zone, and the queue refreshing itself in place
// (the URL carries the filters, so a refresh keeps them). No dependency, nothing loaded from elsewhere.
"use strict";

function localTimes(root) {
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  root.querySelectorAll("time[data-local]").forEach((el) => {
    const at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) {
      el.textContent = fmt.format(at);
      el.title = at.toISOString();
    }
  });
}

function startRefresh(box) {
  const seconds = Number(box.dataset.refresh) || 20;
  const stamp = () => {
    const note = box.querySelector("[data-refreshed]");
    if (note) note.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  };
  const refresh = async () => {
    if (document.hidden) return;
    // do not swap the list under someone who is using it
    if (box.contains(document.activeElement) && document.activeElement !== document.body) return;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } });
      if (!resp.ok) throw new Error(String(resp.status));
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = doc.getElementById(box.id);
      if (!fresh) throw new Error("no list in the answer (logged out?)");
      box.innerHTML = fresh.innerHTML;
      localTimes(box);
      stamp();
      box.dataset.refreshes = String(Number(box.dataset.refreshes || "0") + 1);
    } catch (err) {
      const note = box.querySelector("[data-refreshed]");
      if (note) note.textContent = "Could not refresh (" + err.message + "); reload the page.";
    }
  };
  stamp();
  window.setInterval(refresh, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const box = document.querySelector("[data-refresh]");
  if (box) startRefresh(box);
});
