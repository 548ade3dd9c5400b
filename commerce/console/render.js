// DOM helpers. Everything shown goes through createElement and text nodes: never innerHTML,
// since reasons, errors and event data are user input.

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const PROPERTIES = new Set(["hidden", "disabled", "checked", "selected", "value", "required"]);

// el("a", {href: "#/x", testid: "link", dataset: {id}, on: {click}}, "text", otherNode)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "dataset") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (PROPERTIES.has(key)) node[key] = value;
    else if (/^on/i.test(key) || /html/i.test(key) || key === "style") throw new Error(`el: refusing attribute ${key}`);
    else node.setAttribute(key, String(value));
  }
  return append(node, children);
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

// A value as display text.
export function text(value) {
  if (value === undefined || value === null || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A CSS class suffix from data (a status or outcome): letters only.
export function token(value) {
  return String(value ?? "none").replace(/[^A-Za-z_-]/g, "").toLowerCase() || "none";
}

export function badge(value, testid) {
  return el("span", { class: `badge badge-${token(value)}`, testid }, text(value));
}

// A timestamp in local time (the ISO text as a tooltip); `precise` adds milliseconds.
export function time(iso, precise = false) {
  if (!iso) return el("span", {}, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return el("span", {}, text(iso));
  const shown = precise
    ? `${date.toLocaleDateString()} ${date.toLocaleTimeString(undefined, {
      hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false })}`
    : date.toLocaleString(undefined, { hour12: false });
  return el("time", { datetime: iso, title: iso }, shown);
}

export function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  let s = Math.max(0, Number(value));
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]]) {
    const n = Math.floor(s / size);
    if (n || (unit === "s" && !parts.length)) parts.push(`${n} ${unit}`);
    s -= n * size;
  }
  return parts.slice(0, 2).join(" ");
}

// A table; columns: [{title, cell: (row) => string | Node}], rows: data items.
export function table({ columns, rows, testid, rowTestid, rowData = () => ({}), empty = "Nothing to show." }) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.title)));
  const body = rows.length
    ? rows.map((row) => el("tr", { testid: rowTestid, dataset: rowData(row) }, columns.map((c) => el("td", {}, cellOf(c, row)))))
    : [el("tr", {}, el("td", { class: "muted", colspan: columns.length }, empty))];
  return el("table", { testid }, el("thead", {}, head), el("tbody", {}, body));
}

function cellOf(column, row) {
  const value = column.cell(row);
  return value instanceof Node ? value : text(value);
}

// A <dl> of label/value pairs; values are text or nodes.
export function fields(pairs, testid) {
  return el("dl", { class: "fields", testid }, pairs.map(([label, value, id]) => [
    el("dt", {}, label),
    el("dd", { testid: id }, value instanceof Node ? value : text(value)),
  ]));
}

export function link(href, label, props = {}) {
  return el("a", { href, ...props }, label);
}

// A hash link to a console page.
export function page(path, label, props = {}) {
  return link(`#/${path}`, label, props);
}
