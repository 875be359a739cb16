// groupbuy's live badge for a storefront's product page. Add, where the badge goes:
//   <script src="https://GROUPBUY-HOST/widget.js" data-campaign="CAMPAIGN-ID" async></script>
// It shows the price now, the units to the next price and the time left, kept live from
// the campaign's event stream. Its style lives in a shadow root: the page's CSS is untouched.
"use strict";
(function () {
  const script = document.currentScript;
  if (!script || !script.dataset.campaign) return;
  const origin = new URL(script.src, document.baseURI).origin;
  const campaign = script.dataset.campaign;
  const host = document.createElement("div");
  host.className = "groupbuy-widget";
  host.dataset.campaign = campaign;
  script.after(host);
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>
      :host { display: inline-block; font-family: system-ui, sans-serif; }
      .badge { border: 1px solid #cfe9e0; background: #f3fbf8; color: #1d2433; border-radius: 10px;
               padding: 0.6rem 0.8rem; min-width: 14rem; }
      .top { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; }
      .price { font-size: 1.5rem; font-weight: 700; color: #0b7a5b; }
      .left { font-variant-numeric: tabular-nums; font-size: 0.85rem; color: #475467; }
      .next { font-size: 0.85rem; margin-top: 0.2rem; }
      .label { font-size: 0.7rem; text-transform: uppercase; letter-spacing: 0.05em; color: #667085; }
    </style>
    <div class="badge" part="badge">
      <div class="label">Group price</div>
      <div class="top"><span class="price">…</span><span class="left"></span></div>
      <div class="next"></div>
    </div>`;
  const el = (name) => root.querySelector(name);
  let frame = null;

  function timeLeft() {
    if (frame.status !== "open") return "closed";
    const seconds = Math.max(0, Math.floor((Date.parse(frame.deadline) - Date.now()) / 1000));
    const days = Math.floor(seconds / 86400);
    const clock = [Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60]
      .map((n) => String(n).padStart(2, "0")).join(":");
    return `${days > 0 ? `${days}d ` : ""}${clock} left`;
  }

  function show() {
    el(".price").textContent = `${frame.unit_price} ${frame.currency}`;
    el(".left").textContent = timeLeft();
    el(".next").textContent = frame.units_to_next_price === null
      ? "Lowest price reached"
      : `${frame.units_to_next_price} more units to ${frame.next_unit_price} ${frame.currency}`;
  }

  const stream = new EventSource(`${origin}/v1/campaigns/${encodeURIComponent(campaign)}/live`);
  stream.addEventListener("campaign", (message) => {
    frame = JSON.parse(message.data);
    show();
  });
  setInterval(() => frame && (el(".left").textContent = timeLeft()), 1000);
})();
