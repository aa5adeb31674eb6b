/* Follow a job live on its page: server-sent events from /jobs/{id}/events append the log
   and update the state; at the end the page reloads to show the charge. Without this script
   the page still shows the state and the log so far. */
(function () {
  "use strict";
  var live = document.getElementById("job-live");
  if (!live || !window.EventSource) { return; }
  var labels = JSON.parse(live.getAttribute("data-labels") || "{}");
  var log = document.getElementById("job-log");
  var badge = document.getElementById("job-state");
  var why = document.getElementById("why-pending");
  var reason = document.getElementById("job-reason");
  var detail = document.getElementById("job-reason-detail");
  var source = new EventSource(live.getAttribute("data-events"));

  source.addEventListener("state", function (event) {
    var data = JSON.parse(event.data);
    badge.textContent = labels[data.state] || data.state;
    badge.className = "badge " + data.state;
    why.hidden = data.state !== "PENDING";
    if (reason) { reason.textContent = labels["reason:" + data.reason] || data.reason || ""; }
    if (detail) { detail.textContent = data.detail || ""; }
  });
  source.addEventListener("log", function (event) {
    var data = JSON.parse(event.data);
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(document.createTextNode(data.text));
    if (atBottom) { log.scrollTop = log.scrollHeight; }
  });
  source.addEventListener("end", function (event) {
    var data = JSON.parse(event.data);
    source.close();
    badge.textContent = labels[data.state] || data.state;
    badge.className = "badge " + data.state;
    window.setTimeout(function () { window.location.reload(); }, 800);
  });
}());
