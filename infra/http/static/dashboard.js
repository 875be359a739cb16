// groupbuy's dashboard: every campaign, live from the server's /v1/live event stream.
// Plain JavaScript, no build step. Money stays a decimal string, as the API sends it.
"use strict";

const cards = new Map(); // campaign_id -> {element, frame, detailVersion}

function money(amount, currency) {
  return `${amount} ${currency}`;
}

function timeLeft(deadline, status) {
  if (status !== "open") return "closed";
  const seconds = Math.max(0, Math.floor((Date.parse(deadline) - Date.now()) / 1000));
  const days = Math.floor(seconds / 86400);
  const clock = [Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
  return days > 0 ? `${days}d ${clock}` : clock;
}

function cardFor(frame) {
  let card = cards.get(frame.campaign_id);
  if (!card) {
    const element = document.getElementById("card").content.firstElementChild.cloneNode(true);
    element.dataset.campaign = frame.campaign_id;
    document.getElementById("campaigns").append(element);
    document.getElementById("empty").hidden = true;
    card = { element, frame: null, detailVersion: null, tierStart: 0 };
    cards.set(frame.campaign_id, card);
  }
  return card;
}

function show(frame) {
  const card = cardFor(frame);
  const el = (name) => card.element.querySelector(name);
  const moved = card.frame && card.frame.unit_price !== frame.unit_price;
  card.frame = frame;
  el(".title").textContent = frame.title;
  el(".status").textContent = frame.status;
  el(".status").dataset.status = frame.status;
  el(".price").textContent = money(frame.unit_price, frame.currency);
  el(".price").classList.toggle("moved", Boolean(moved));
  el(".committed").textContent = frame.committed_quantity;
  el(".buyers").textContent = frame.buyers;
  el(".countdown").textContent = timeLeft(frame.deadline, frame.status);
  const next = el(".next");
  if (frame.next_unit_price === null || frame.units_to_next_price === null) {
    next.textContent = "The lowest price is reached.";
  } else {
    next.textContent = `${frame.units_to_next_price} more units to ${money(frame.next_unit_price, frame.currency)}`;
  }
  showProgress(card);
  refreshDetail(card);
}

function showProgress(card) {
  const frame = card.frame;
  const bar = card.element.querySelector(".bar");
  let percent = 100;
  if (frame.units_to_next_price !== null) {
    const target = frame.filled_quantity + frame.units_to_next_price;
    const start = Math.min(card.tierStart, frame.filled_quantity);
    percent = target > start ? (100 * (frame.filled_quantity - start)) / (target - start) : 0;
  }
  bar.style.width = `${percent.toFixed(1)}%`;
  bar.parentElement.setAttribute("aria-valuenow", percent.toFixed(0));
}

async function refreshDetail(card) {
  const frame = card.frame;
  if (card.detailVersion === frame.version) return;
  card.detailVersion = frame.version;
  const base = `/v1/campaigns/${encodeURIComponent(frame.campaign_id)}`;
  // The reads may be a second old in the browser's cache (max-age=1): ask again each time,
  // with the ETag, which costs a 304 when nothing changed.
  const read = (url) => fetch(url, { cache: "no-cache" }).then((r) => r.json());
  const [detail, history] = await Promise.all([read(base), read(`${base}/prices`)]);
  if (card.detailVersion !== frame.version) return; // a later change's answers come too
  showLadder(card, detail);
  showChart(card, history.prices);
  const sites = card.element.querySelector(".sites");
  sites.replaceChildren(
    ...detail.sites.map((site) => {
      const item = document.createElement("li");
      item.textContent = `${site.site_id}: ${site.quantity}`;
      return item;
    }),
  );
  showProgress(card);
}

function showLadder(card, detail) {
  const ladder = card.element.querySelector(".ladder");
  const pricing = detail.pricing;
  const steps = pricing.kind === "tiers"
    ? pricing.tiers.map((t) => [t.min_quantity, t.unit_price])
    : [[1, pricing.list_price], [pricing.to_quantity, detail.floor_price]];
  const quantity = Math.max(detail.filled_quantity, 1);
  const reached = steps.filter(([from]) => from <= quantity);
  card.tierStart = reached.length ? reached[reached.length - 1][0] : 0;
  if (card.tierStart <= 1) card.tierStart = 0;
  ladder.replaceChildren(
    ...steps.map(([from, price], index) => {
      const item = document.createElement("li");
      const units = from === 1 ? "1 unit" : `${from} units`;
      const label = pricing.kind === "linear" && index === 1 ? `at ${units}` : `from ${units}`;
      item.innerHTML = `<span></span><span></span>`;
      item.children[0].textContent = label;
      item.children[1].textContent = money(price, detail.currency);
      if (from <= quantity) item.classList.add(index === reached.length - 1 ? "now" : "reached");
      return item;
    }),
  );
}

function showChart(card, prices) {
  // A step line of the prices shown so far, oldest at the left; the last one holds to now.
  const svg = card.element.querySelector(".chart");
  if (prices.length === 0) return;
  const values = prices.map((p) => Number(p.unit_price));
  const high = Math.max(...values), low = Math.min(...values);
  const y = (value) => (high === low ? 50 : 90 - (80 * (value - low)) / (high - low));
  const step = 300 / values.length;
  const points = values.flatMap((value, index) => [
    `${index * step},${y(value)}`,
    `${(index + 1) * step},${y(value)}`,
  ]);
  svg.innerHTML = `<polyline points="${points.join(" ")}"></polyline>`;
  svg.setAttribute("aria-label", `price history: ${values.join(", ")}`);
}

function connect() {
  const state = document.getElementById("connection");
  const stream = new EventSource("/v1/live");
  stream.addEventListener("open", () => {
    state.dataset.state = "live";
    state.textContent = "live";
  });
  stream.addEventListener("error", () => {
    state.dataset.state = "lost";
    state.textContent = "reconnecting…";
  });
  stream.addEventListener("campaign", (message) => show(JSON.parse(message.data)));
}

setInterval(() => {
  for (const card of cards.values()) {
    const countdown = card.element.querySelector(".countdown");
    countdown.textContent = timeLeft(card.frame.deadline, card.frame.status);
  }
}, 1000);

connect();
