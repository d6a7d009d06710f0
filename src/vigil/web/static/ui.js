// Review UI behaviour. Reviewer safety: media stays blurred/greyscale until the reviewer clicks
// "Reveal" on one item; that counts an exposure on the server and swaps in the real thumbnail
// (a short-lived URL). Leaving the item (mouse out, focus out, tab hidden) re-blurs it.
// Audio and video are always muted and never autoplay.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  function reblur(box) {
    const img = box.querySelector("img");
    if (box.classList.contains("revealed")) {
      box.classList.remove("revealed");
      img.src = box.dataset.preview;
    }
  }

  document.querySelectorAll(".media-box").forEach(function (box) {
    const img = box.querySelector("img");
    const btn = box.querySelector("button.reveal");
    const msg = box.querySelector(".msg");
    btn.addEventListener("click", async function () {
      const resp = await fetch(box.dataset.reveal, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
      });
      const body = await resp.json();
      if (!resp.ok) { msg.textContent = body.error ? body.error.message : "cannot reveal"; return; }
      img.src = body.url;
      box.classList.add("revealed");
      const counter = document.getElementById("exposure");
      if (counter) counter.textContent = body.today;
    });
    box.addEventListener("mouseleave", function () { reblur(box); });
    box.addEventListener("focusout", function (ev) { if (!box.contains(ev.relatedTarget)) reblur(box); });
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) document.querySelectorAll(".media-box").forEach(reblur);
  });
  document.querySelectorAll("video, audio").forEach(function (m) {
    m.muted = true; m.autoplay = false; m.removeAttribute("autoplay"); m.pause();
  });
})();
