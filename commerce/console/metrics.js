// A small reader of the Prometheus text format that /metrics serves.

function unescape(value) {
  return value.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

function number(value) {
  if (value === "+Inf") return Infinity;
  if (value === "-Inf") return -Infinity;
  return Number(value);
}

// {families: Set of declared names, samples: [{name, labels, value}]}
export function parseMetrics(textBody) {
  const families = new Set();
  const samples = [];
  for (const raw of textBody.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const declared = /^#\s+TYPE\s+(\S+)/.exec(line);
    if (declared) families.add(declared[1]);
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = unescape(l[2]);
    samples.push({ name: m[1], labels, value: number(m[3]) });
  }
  return { families, samples };
}

// The sum of the samples named `name` whose labels include `labels`; 0 when the family is declared
// without such a sample, null when /metrics does not have it at all.
export function total(metrics, name, labels = {}) {
  let found = false;
  let sum = 0;
  for (const s of metrics.samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).some(([k, v]) => s.labels[k] !== v)) continue;
    found = true;
    sum += s.value;
  }
  if (found) return sum;
  return metrics.families.has(name) ? 0 : null;
}

// label value -> sample value, for the samples named `name` (e.g. sagas by status).
export function byLabel(metrics, name, label) {
  const out = {};
  for (const s of metrics.samples) if (s.name === name && label in s.labels) out[s.labels[label]] = (out[s.labels[label]] || 0) + s.value;
  return out;
}
