// The API's docs page: fetches the OpenAPI document the server generates and renders every
// operation (method, path, summary, roles, parameters, body, answers) and every schema.
// Plain DOM, no inline script or style (the page runs under a strict CSP), no external files.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function anchor(method, path) {
  return "op-" + method + "-" + path.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "");
}

function refName(ref) {
  return ref.split("/").pop();
}

function typeOf(schema) {
  if (!schema || Object.keys(schema).length === 0) return "any";
  if (schema.$ref) return el("a", { href: "#schema-" + refName(schema.$ref) }, refName(schema.$ref));
  if (schema.anyOf) {
    const span = el("span", {});
    schema.anyOf.forEach((part, i) => {
      if (i) span.append(" | ");
      span.append(typeOf(part));
    });
    return span;
  }
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") {
    const span = el("span", {}, "array of ");
    span.append(typeOf(schema.items));
    return span;
  }
  return schema.type || "any";
}

function limits(schema) {
  const words = [];
  for (const key of ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "maxItems", "pattern"]) {
    if (schema && schema[key] !== undefined) words.push(key + " " + schema[key]);
  }
  return words.length ? " (" + words.join(", ") + ")" : "";
}

function renderSchema(schema) {
  const box = el("div", { class: "schema" });
  if (!schema) return box;
  const head = el("p", {}, "Type: ");
  head.append(typeOf(schema), limits(schema));
  box.append(head);
  if (schema.description) box.append(el("p", {}, schema.description));
  const props = schema.properties || {};
  const names = Object.keys(props);
  if (names.length) {
    const required = new Set(schema.required || []);
    const list = el("ul", {});
    for (const name of names) {
      const item = el("li", {}, el("code", {}, name), ": ");
      item.append(typeOf(props[name]), limits(props[name]));
      if (required.has(name)) item.append(" ", el("span", { class: "required" }, "required"));
      if (props[name].description) item.append(" — " + props[name].description);
      list.append(item);
    }
    box.append(list);
  }
  if (schema.additionalProperties === false) box.append(el("p", {}, "No other fields."));
  return box;
}

function renderParameters(parameters) {
  const table = el("table", {});
  table.append(el("caption", {}, "Parameters"));
  table.append(el("thead", {}, el("tr", {},
    el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "In"),
    el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Description"))));
  const body = el("tbody", {});
  for (const p of parameters) {
    const type = el("td", {});
    type.append(typeOf(p.schema), limits(p.schema));
    body.append(el("tr", {}, el("th", { scope: "row" }, el("code", {}, p.name)),
      el("td", {}, p.in + (p.required ? " (required)" : "")), type, el("td", {}, p.description || "")));
  }
  table.append(body);
  return table;
}

function renderResponses(responses) {
  const table = el("table", {});
  table.append(el("caption", {}, "Answers"));
  table.append(el("thead", {}, el("tr", {},
    el("th", { scope: "col" }, "Status"), el("th", { scope: "col" }, "Description"),
    el("th", { scope: "col" }, "Body"))));
  const body = el("tbody", {});
  for (const [status, answer] of Object.entries(responses)) {
    const content = el("td", {});
    for (const [type, media] of Object.entries(answer.content || {})) {
      content.append(el("code", {}, type), " ");
      if (media.schema) content.append(typeOf(media.schema));
    }
    body.append(el("tr", {}, el("th", { scope: "row" }, status), el("td", {}, answer.description || ""), content));
  }
  table.append(body);
  return table;
}

function renderOperation(method, path, op) {
  const id = anchor(method, path);
  const section = el("section", { class: "operation", id: id, "aria-labelledby": id + "-title" });
  section.dataset.search = (method + " " + path + " " + (op.summary || "") + " " + (op["x-roles"] || []).join(" ")).toLowerCase();
  section.append(el("h3", { id: id + "-title" },
    el("span", { class: "method method-" + method }, method.toUpperCase()), " ", el("code", {}, path)));
  if (op.summary) section.append(el("p", {}, op.summary));
  if (op.description) section.append(el("p", {}, op.description));
  const roles = op["x-roles"];
  section.append(el("p", { class: "roles" },
    roles ? "Roles: " + roles.join(", ") + " (permission " + op["x-permission"] + ")" : "Public: no token."));
  if (op["x-stream"]) section.append(el("p", {}, "The answer is a stream (Server-Sent Events or a WebSocket)."));
  if (op.parameters && op.parameters.length) section.append(renderParameters(op.parameters));
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (body) {
    section.append(el("h4", {}, "Request body (JSON" + (op.requestBody.required ? ", required" : "") + ")"));
    section.append(renderSchema(body.schema));
  }
  section.append(renderResponses(op.responses || {}));
  return section;
}

function render(doc) {
  const toc = document.getElementById("toc");
  const main = document.getElementById("operations");
  let count = 0;
  for (const path of Object.keys(doc.paths).sort()) {
    for (const method of METHODS) {
      const op = doc.paths[path][method];
      if (!op) continue;
      count += 1;
      main.append(renderOperation(method, path, op));
      const item = el("li", {}, el("a", { href: "#" + anchor(method, path) },
        el("span", { class: "method method-" + method }, method.toUpperCase()), " ", path));
      item.dataset.search = main.lastChild.dataset.search;
      toc.append(item);
    }
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {})) {
    const section = el("section", { id: "schema-" + name, "aria-labelledby": "schema-" + name + "-title" });
    section.append(el("h3", { id: "schema-" + name + "-title" }, name), renderSchema(schema));
    schemas.append(section);
  }
  document.getElementById("status").textContent = count + " operations.";
  document.body.dataset.operations = String(count);
}

function filter(text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  for (const node of document.querySelectorAll("[data-search]")) {
    node.hidden = !words.every((w) => node.dataset.search.includes(w));
  }
}

async function main() {
  document.getElementById("filter").addEventListener("input", (ev) => filter(ev.target.value));
  try {
    const response = await fetch("/api/v1/openapi.json", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (err) {
    document.getElementById("status").textContent = "Could not load the OpenAPI document: " + err.message;
  }
}

main();
