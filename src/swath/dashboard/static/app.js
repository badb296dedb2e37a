// swath dashboard: confirmation before actions, and live updates of a job page by
// server-sent events. Fragments come rendered (and escaped) by the server; this script sets
// no user text as HTML of its own making.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function follow(live) {
  const source = new EventSource(live.getAttribute("data-events"));
  source.addEventListener("update", (event) => {
    const data = JSON.parse(event.data);
    document.getElementById("summary").innerHTML = data.summary;
    document.getElementById("tree").innerHTML = data.tree;
    const logs = document.getElementById("logs");
    if (logs && data.logs !== undefined) logs.innerHTML = data.logs;
    live.textContent = "live · " + new Date().toLocaleTimeString();
    if (["COMPLETED", "FAILED", "CANCELED"].includes(data.state)) {
      for (const button of document.querySelectorAll(".actions button.danger")) {
        button.disabled = true;
      }
      const retry = document.querySelector('.actions form[action$="/retry"] button');
      if (retry) retry.disabled = data.state !== "FAILED";
    }
  });
  source.addEventListener("end", () => {
    source.close();
    live.textContent = "finished";
    live.classList.add("ended");
  });
  source.onerror = () => {
    live.textContent = "reconnecting…";
  };
}

function followJobs(rows) {
  const source = new EventSource(rows.getAttribute("data-events"));
  source.addEventListener("rows", (event) => {
    rows.innerHTML = JSON.parse(event.data).rows;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) follow(live);
  const rows = document.getElementById("job-rows");
  if (rows) followJobs(rows);
});
