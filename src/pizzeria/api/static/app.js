// The order page: build an order from the menu, post it, follow it through its events.
// No framework and nothing loaded from elsewhere.
// The card number never reaches our API: GET /payments/config names the payment provider
// (its base URL and publishable key), the page posts the number there alone (POST
// {provider}/v1/payment_methods) and puts the token it answers (pm_...) in the order as
// credit_card_info.payment_method. The number field is emptied as soon as it is read, a
// refusal is one sentence under the form, and the card is only ever shown as the token's
// last four digits. When the API says it cannot tokenize (real Stripe, whose tokenization
// needs Stripe.js), the number goes in the order, as the exercise's clients send it
// (docs/payments.md#the-order-page-tokenizes-the-card).
"use strict";

const STEP_LABELS = {
  get_distance: "Check the delivery distance",
  update_inventory: "Take the ingredients from stock",
  process_credit_card: "Hold the amount on the card",
  send_bill: "Capture the hold and send the bill (after this, no way back)",
  notify_delivery_driver: "Find a delivery driver",
};
// Steps that run only in some orders: listed when they happen.
const OPTIONAL_STEP_LABELS = {
  refund_undelivered_order: "No driver: refund the order",
};
const COMPENSATION_LABELS = {
  refund_customer: "Release the card hold",
  revert_inventory: "Put the ingredients back",
};
const PIVOT = "send_bill";

const $ = (selector) => document.querySelector(selector);
let menu = null;
let cart = [];
let current = null; // {number, token, source, card}: card, the last four digits
let payments = null; // GET /payments/config: where to trade the number for a token
// The provider named when the page loaded: the page's security policy lets it connect
// there and nowhere else, so a provider that moved since needs the page loaded again.
let loadedProvider = null;
let card = null; // the token of the card typed last, until an order carries it: {id, last4}

function dollars(cents) {
  return "$" + (cents / 100).toFixed(2);
}

function randomKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function describe(size, toppings) {
  const name = size[0].toUpperCase() + size.slice(1);
  if (!toppings.length) return name;
  const last = toppings[toppings.length - 1];
  const rest = toppings.slice(0, -1);
  return `${name}, with ${rest.length ? rest.join(", ") + " and " : ""}${last}`;
}

// -- building the order ------------------------------------------------------------------

async function loadMenu() {
  const answer = await fetch("/menu");
  menu = await answer.json();
  const sizes = $("#size");
  for (const size of menu.sizes) {
    const option = document.createElement("option");
    option.value = size.size;
    option.textContent = `${size.size} ${dollars(size.price)}`;
    sizes.append(option);
  }
  const box = $("#toppings");
  for (const topping of menu.toppings) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = topping;
    label.append(input, " " + topping);
    box.append(label);
  }
  // The exercise's three pizzas, to start from.
  addPizza("large", ["mushrooms", "onions"]);
  addPizza("small", ["pepperoni"]);
  addPizza("medium", ["extra cheese"]);
}

function priceOf(size) {
  return menu.sizes.find((entry) => entry.size === size).price;
}

function addPizza(size, toppings) {
  cart.push({ description: describe(size, toppings), price: priceOf(size) });
  renderCart();
}

function renderCart() {
  const list = $("#cart");
  list.replaceChildren();
  cart.forEach((pizza, index) => {
    const item = document.createElement("li");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link";
    remove.textContent = "remove";
    remove.setAttribute("aria-label", `remove ${pizza.description}`);
    remove.addEventListener("click", () => {
      cart.splice(index, 1);
      renderCart();
    });
    item.append(`${pizza.description}: ${dollars(pizza.price)} `, remove);
    list.append(item);
  });
  const total = cart.reduce((sum, pizza) => sum + pizza.price, 0);
  const billed = total > menu.discount_over ? total - menu.discount : total;
  $("#total").textContent = cart.length
    ? `Total ${dollars(billed)}` + (billed < total ? ` (${dollars(menu.discount)} off)` : "")
    : "No pizza yet.";
}

function field(name) {
  return document.querySelector(`[name="${name}"]`).value;
}

// No order number: the API chooses it (an unguessable one) and answers with it.
function orderBody(cardInfo) {
  return {
    customer: {
      customer_id: Math.floor(Math.random() * 1e9),
      name: field("customer.name"),
      email: field("customer.email"),
      phone: field("customer.phone"),
    },
    items: cart,
    is_delivery: document.querySelector('[name="delivery"]:checked').value === "delivery",
    address: {
      line1: field("address.line1"),
      line2: field("address.line2"),
      city: field("address.city"),
      state: field("address.state"),
      postal_code: field("address.postal_code"),
    },
    credit_card_info: cardInfo,
  };
}

// -- the card: its number goes to the payment provider, its token in the order -----------

async function loadPayments() {
  let found = null; // none: asked again when the order is placed
  try {
    const answer = await fetch("/payments/config");
    if (answer.ok) found = await answer.json();
  } catch (error) {
    found = null;
  }
  payments = found;
  const note = payments && payments.tokenize
    ? "The number goes only to the payment provider, which gives the order a token for it."
    : "The number goes in the order, and from there once to the payment provider.";
  $("#card-note").textContent = payments ? note : "";
}

class CardRefused extends Error {}

// POST {provider}/v1/payment_methods with the publishable key: the card's token, or why not.
async function tokenize(number) {
  let answer;
  try {
    answer = await fetch(`${payments.provider_url}/v1/payment_methods`, {
      method: "POST",
      headers: { Authorization: `Bearer ${payments.publishable_key}` },
      body: new URLSearchParams({ type: "card", "card[number]": number }),
    });
  } catch (error) {
    if (loadedProvider !== null && payments.provider_url !== loadedProvider) {
      throw new CardRefused("The payment provider moved: reload the page, then place the order.");
    }
    throw new CardRefused("The payment provider did not answer: nothing was ordered, try again.");
  }
  const result = await answer.json().catch(() => ({}));
  if (!answer.ok || !result.id || !result.card) {
    const why = (result.error && result.error.message) || `answer ${answer.status}`;
    throw new CardRefused(`The payment provider refused the card (${why.replace(/\.$/, "")}).`);
  }
  return { id: result.id, last4: result.card.last4 };
}

function showCard() {
  const kept = card && `**** ${card.last4} (kept: type a number to change it)`;
  $("#card").placeholder = kept || "16 digits";
}

function cardError(detail) {
  showFormError({ detail, errors: [{ field: "credit_card_info.number" }] });
  return null;
}

// What the order says of the card, {info, last4}, or null (the form says why). The number
// field is emptied once read, whatever the provider answers: the page keeps no number.
async function cardOfOrder() {
  const input = $("#card");
  const number = input.value.replace(/\s/g, "");
  const holderName = field("credit_card_info.holderName");
  // Asked afresh before a number leaves the page: the provider may have moved or gone
  // since the page loaded (the API names it only once it proved it is the right one).
  if (number || !payments) await loadPayments();
  if (!payments) return cardError("The payment settings did not load: try again.");
  if (!payments.tokenize) return { info: { holderName, number }, last4: number.slice(-4) };
  if (number) {
    input.value = "";
    card = null;
    try {
      card = await tokenize(number);
    } catch (refused) {
      showCard();
      return cardError(refused.message);
    }
    showCard();
  }
  if (!card) return cardError("Type the card number.");
  return { info: { holderName, payment_method: card.id }, last4: card.last4 };
}

function showFormError(problem) {
  document.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const box = $("#form-error");
  const errors = (problem && problem.errors) || [];
  // Every field the API refused, a line each; one problem is said as the API said it.
  box.textContent = !problem
    ? ""
    : errors.length > 1
      ? errors.map((error) => error.reason).join("\n")
      : problem.detail || problem.title;
  box.hidden = !problem;
  for (const error of errors) {
    const name = error.field.replace(/\[\d+\].*/, "");
    const input = document.querySelector(`[data-field="${name}"]`);
    if (input) input.classList.add("invalid");
  }
}

// A network hiccup retries with the same Idempotency-Key and body: never two orders, and
// a retry whose first answer was lost gets the same order number and token back.
async function postOrder(body) {
  const key = randomKey();
  let lastError = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const answer = await fetch("/orders", {
        method: "POST",
        // At once (202): the page follows every order live, a declined card's refund
        // and restock included, rather than waiting for the card hold (201 or 402).
        headers: {
          "Content-Type": "application/json",
          "Idempotency-Key": key,
          Prefer: "respond-async",
        },
        body: JSON.stringify(body),
      });
      if (answer.status < 500) return answer;
      lastError = await answer.json();
    } catch (error) {
      lastError = { detail: "The network failed; trying again..." };
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
  }
  return { ok: false, status: 503, json: async () => lastError };
}

async function placeOrder(event) {
  event.preventDefault();
  showFormError(null);
  $("#place").disabled = true;
  try {
    const paying = await cardOfOrder();
    if (!paying) return;
    const answer = await postOrder(orderBody(paying.info));
    const result = await answer.json();
    if (answer.status !== 202 && answer.status !== 201) {
      showFormError(result);
      return;
    }
    $("#card").value = ""; // the number stays nowhere on the page
    card = null; // a token pays for one order
    showCard();
    const { order_number: number, order_token: token } = result;
    location.hash = new URLSearchParams({ order: number, token, card: paying.last4 });
    follow(number, token, paying.last4);
  } finally {
    $("#place").disabled = false;
  }
}

// -- following the order -----------------------------------------------------------------

function stepItem(name, label) {
  const item = document.createElement("li");
  item.dataset.name = name;
  item.className = "state-pending";
  const title = document.createElement("span");
  title.className = "label";
  title.textContent = label;
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = "pending";
  const error = document.createElement("span");
  error.className = "error-text";
  item.append(title, state, error);
  return item;
}

function setState(item, state, error) {
  item.className = "state-" + state.replace(/\s/g, "-");
  item.querySelector(".state").textContent = state;
  item.querySelector(".error-text").textContent = error || "";
}

// Status 0: the API did not answer (down, or the network): the order goes on without us.
async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${current.token}`, ...(options.headers || {}) };
  try {
    const answer = await fetch(path, { ...options, headers });
    return { status: answer.status, body: answer.status === 204 ? null : await answer.json() };
  } catch {
    return { status: 0, body: { detail: LOST } };
  }
}

const LOST = "The connection to the pizzeria is lost: your order goes on, and this page catches up once it is back.";

// Where the order's money is, as the card's statement shows it (ledger.money).
function moneyShown(money) {
  const held = dollars(money.charged);
  switch (money.money) {
    case "held":
      return `hold ${held}`;
    case "captured":
      return `hold ${held}, captured ${dollars(money.billed)}`;
    case "released":
      return `hold ${held} released: nothing taken`;
    case "expired":
      return `hold ${held} expired: nothing taken`;
    case "refunded":
      return `captured ${dollars(money.billed)}, refunded ${dollars(money.refunded_after_bill || money.refunded)}`;
    default:
      return "nothing held on the card";
  }
}

async function showSummary() {
  if (!current) return null;
  const { status, body } = await api(`/orders/${current.number}`);
  if (status === 0) {
    $("#details").textContent = LOST;
    return null;
  }
  if (status === 401 || status === 404) {
    closedLink(body);
    return null;
  }
  if (status !== 200) {
    $("#summary").textContent = body.detail;
    return null;
  }
  // An order paid with a token names no digits: the page shows the token's last four.
  const shown = current.card ? `**** ${current.card}` : body.card || "****";
  const parts = [`Total ${dollars(body.amount || 0)}`, `card ${shown}`];
  if (body.ledger) {
    parts.push(moneyShown(body.ledger));
  }
  $("#summary").textContent = parts.join(" · ");
  // A step the order will not run (a pickup's distance on the fast path, its driver) has
  // no event: the order's view says so, and it is not left pending behind the others.
  for (const step of body.steps || []) {
    const item = document.querySelector(`#steps li.state-pending[data-name="${step.name}"]`);
    if (item && step.state === "not run") setState(item, "not run");
  }
  // No step has answered yet and the order says nothing: no kitchen has taken it so far.
  const waiting = body.status === "RUNNING" && !body.details && !document.querySelector("#steps li:not(.state-pending):not(.state-not-run)");
  $("#details").textContent = body.status === "RUNNING" ? body.details || (waiting ? WAITING : "") : "";
  $("#status").textContent = body.status;
  $("#status").className = "badge status-" + body.status;
  $("#cancel").hidden = !body.cancellable;
  return body;
}

const WAITING = "Waiting for the kitchen to take the order.";

// A link that opens no order (its token expired, or it was never this order's): said in
// words, with the way back to the form, instead of an order left "running" for ever.
function closedLink(body) {
  if (current && current.source) current.source.close();
  const expired = body && body.type === "urn:pizzeria:problem:token-expired";
  $("#status").textContent = expired ? "LINK EXPIRED" : "NO ACCESS";
  $("#status").className = "badge status-FAILED";
  $("#summary").textContent = "";
  $("#details").textContent = "";
  $("#outcome").textContent = expired
    ? "This order link has expired (a link opens its order for a day); the order itself went on as it was."
    : "This link does not open an order: it may be mistyped, or for an order placed again since.";
  $("#cancel").hidden = true;
  $("#new-order").hidden = false;
}

function follow(number, token, last4) {
  if (current && current.source) current.source.close();
  const digits = /^[0-9]{4}$/.test(last4 || "") ? last4 : null;
  current = { number, token, source: null, card: digits };
  $("#order-form").hidden = true;
  $("#tracker").hidden = false;
  $("#new-order").hidden = true;
  $("#order-number").textContent = number;
  $("#summary").textContent = digits ? `Card **** ${digits}` : "";
  $("#outcome").textContent = "";
  $("#cancel-error").hidden = true;
  const steps = $("#steps");
  steps.replaceChildren(...Object.entries(STEP_LABELS).map(([n, l]) => stepItem(n, l)));
  $("#compensations").replaceChildren();
  $("#compensations-box").hidden = true;
  showSummary();
  $("#tracker").focus(); // a keyboard user goes on from the order, not from the page's top
  const source = new EventSource(`/orders/${encodeURIComponent(number)}/events?token=${encodeURIComponent(token)}`);
  current.source = source;
  source.addEventListener("step", (event) => onStep(JSON.parse(event.data)));
  source.addEventListener("compensation", (event) => onCompensation(JSON.parse(event.data)));
  source.addEventListener("outcome", (event) => onOutcome(JSON.parse(event.data)));
  // Refused (the link opens no order) the stream closes: the order's view says why. Lost,
  // the browser reconnects by itself and resumes; meanwhile the page says so.
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) showSummary();
    else if (current && current.source === source) $("#details").textContent = LOST;
  });
  source.addEventListener("open", () => {
    if ($("#details").textContent === LOST) showSummary();
  });
}

// The money and the stage as the order reads now: asked again when a step or a
// compensation has answered (a hold taken, a capture, a release), a few at once read once.
function refreshSummary() {
  if (!current || current.refreshing) return;
  current.refreshing = setTimeout(() => {
    if (!current) return;
    current.refreshing = null;
    showSummary();
  }, 150);
}

function onStep(change) {
  if (change.state !== "running") refreshSummary();
  let item = document.querySelector(`#steps li[data-name="${change.name}"]`);
  if (!item && OPTIONAL_STEP_LABELS[change.name]) {
    item = stepItem(change.name, OPTIONAL_STEP_LABELS[change.name]);
    $("#steps").append(item);
  }
  if (item) setState(item, change.state, change.error);
  if (change.name === PIVOT) $("#cancel").hidden = true;
}

function onCompensation(change) {
  if (change.state !== "running") refreshSummary();
  $("#cancel").hidden = true;
  $("#compensations-box").hidden = false;
  let item = document.querySelector(`#compensations li[data-name="${change.name}"]`);
  if (!item) {
    item = stepItem(change.name, COMPENSATION_LABELS[change.name] || change.name);
    $("#compensations").append(item);
  }
  setState(item, change.state, change.error);
}

function onOutcome(outcome) {
  current.source.close(); // the stream is over: no reconnect
  $("#cancel").hidden = true;
  $("#new-order").hidden = false;
  $("#status").textContent = outcome.status;
  $("#status").className = "badge status-" + outcome.status;
  for (const item of document.querySelectorAll("#steps li.state-pending")) setState(item, "not run");
  // A billed order no driver took is refunded in full (refund_undelivered_order).
  const undelivered = outcome.delivery === "DELIVERY FAILURE";
  const why = String(outcome.error || outcome.error_type || "").replace(/\.+$/, "");
  const text = {
    COMPLETED: undelivered
      ? `No driver could take the order: its amount was refunded to the card (confirmation ${outcome.confirmation_number}).`
      : `Done: confirmation ${outcome.confirmation_number}.`,
    FAILED: `Failed: ${why}. Everything done was undone.`,
    CANCELLED: "Cancelled: everything done was undone.",
  };
  $("#outcome").textContent = text[outcome.status] || outcome.status;
  if (outcome.status === "COMPLETED" && undelivered) {
    // Not a success for the customer: no pizza came; the driver step found nobody.
    $("#status").textContent = "NOT DELIVERED";
    $("#status").className = "badge status-FAILED";
    const driver = document.querySelector('#steps li[data-name="notify_delivery_driver"]');
    if (driver) setState(driver, "no driver found");
  }
  showSummary();
  $("#new-order").focus();
}

async function cancelOrder() {
  $("#cancel").disabled = true;
  try {
    const { status, body } = await api(`/orders/${current.number}/cancel`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "cancelled on the order page" }),
    });
    if (status !== 200) {
      $("#cancel-error").textContent = body.detail;
      $("#cancel-error").hidden = false;
    }
    $("#cancel").hidden = true;
  } finally {
    $("#cancel").disabled = false;
  }
}

function newOrder() {
  if (current && current.source) current.source.close();
  current = null;
  history.replaceState(null, "", location.pathname);
  $("#tracker").hidden = true;
  $("#order-form").hidden = false;
  $("#size").focus();
}

// The order the address names (#order=...&token=...&card=4242), if any.
function followTheAddress() {
  const saved = new URLSearchParams(location.hash.slice(1));
  if (saved.get("order") && saved.get("token")) {
    if (!current || current.number !== saved.get("order")) {
      follow(saved.get("order"), saved.get("token"), saved.get("card"));
    }
  } else if (current) {
    newOrder(); // Back from an order: the form, as the address says (Forward: the order)
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  await Promise.all([loadMenu(), loadPayments()]);
  loadedProvider = payments && payments.tokenize ? payments.provider_url : "";
  $("#add-pizza").addEventListener("click", () => {
    const toppings = Array.from(document.querySelectorAll("#toppings input:checked"), (i) => i.value);
    addPizza($("#size").value, toppings);
  });
  for (const button of document.querySelectorAll("[data-card]")) {
    button.addEventListener("click", () => ($("#card").value = button.dataset.card));
  }
  $("#order-form").addEventListener("submit", placeOrder);
  $("#cancel").addEventListener("click", cancelOrder);
  $("#new-order").addEventListener("click", newOrder);
  // A reload, Back and Forward follow the order in the address.
  window.addEventListener("hashchange", followTheAddress);
  followTheAddress();
});
