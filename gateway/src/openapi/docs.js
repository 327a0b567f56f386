"use strict";
// Renders the gateway's OpenAPI document (fetched from openapi.json beside this page): one section
// per tag, one expandable entry per operation. Builds the DOM with textContent only.
(function () {
  const METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
  const content = document.getElementById("content");
  const toc = document.getElementById("toc");
  const filter = document.getElementById("filter");
  let spec = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function lookup(ref) {
    if (typeof ref !== "string" || !ref.startsWith("#/")) return null;
    let node = spec;
    for (const raw of ref.slice(2).split("/")) {
      const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
      if (!node || typeof node !== "object" || !(key in node)) return null;
      node = node[key];
    }
    return node;
  }

  function refName(ref) {
    const parts = ref.split("/");
    return parts[parts.length - 1];
  }

  // Follows `$ref`s; the referring object's own keywords (its description) win.
  function resolve(schema) {
    let current = schema;
    for (let hops = 0; current && typeof current === "object" && current.$ref && hops < 32; hops++) {
      const target = lookup(current.$ref);
      if (!target) break;
      const own = Object.assign({}, current);
      delete own.$ref;
      current = Object.assign({}, target, own);
    }
    return current;
  }

  function isAny(schema) {
    return schema === true || schema === undefined || schema === null ||
      (typeof schema === "object" && Object.keys(schema).length === 0);
  }

  function typeLabel(schema) {
    if (isAny(schema)) return "any";
    if (schema.$ref) return refName(schema.$ref);
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    if (schema.enum) return "enum";
    const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type;
    if (type === "array") return "array of " + typeLabel(schema.items);
    if (type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object") {
      return "map of string to " + typeLabel(schema.additionalProperties);
    }
    if (!type) return schema.properties ? "object" : "any";
    return schema.format ? type + " (" + schema.format + ")" : type;
  }

  // The schema whose members are worth a nested view, or null for a leaf.
  function expandable(schema) {
    const resolved = resolve(schema);
    if (!resolved || typeof resolved !== "object") return null;
    if (resolved.properties || resolved.enum) return resolved;
    if (resolved.type === "array" && resolved.items) return expandable(resolved.items);
    if (resolved.additionalProperties && typeof resolved.additionalProperties === "object") {
      return expandable(resolved.additionalProperties);
    }
    return null;
  }

  // Renders its inside when first opened, so that recursive messages unfold one level at a time.
  function lazyDetails(className, summary, render, open) {
    const details = el("details", className);
    details.append(summary);
    const fill = function () {
      if (details.open && !details.dataset.rendered) {
        details.dataset.rendered = "yes";
        details.append(render());
      }
    };
    details.addEventListener("toggle", fill);
    if (open) {
      details.open = true;
      fill();
    }
    return details;
  }

  function schemaBody(schema) {
    const box = el("div", "schema");
    if (schema.description) box.append(el("p", "desc", schema.description));
    if (schema.enum) {
      const values = el("ul", "enum");
      for (const value of schema.enum) values.append(el("li", null, value === null ? "null" : value));
      box.append(values);
    }
    if (schema.properties) {
      const required = schema.required || [];
      const entries = Object.entries(schema.properties);
      if (entries.length === 0) box.append(el("p", "note", "No fields."));
      for (const [name, property] of entries) box.append(propertyRow(name, property, required.includes(name)));
    }
    return box;
  }

  function count(n, noun) {
    return n + " " + noun + (n === 1 ? "" : "s");
  }

  function constraints(schema) {
    const resolved = resolve(schema) || {};
    const notes = [];
    if (resolved.pattern) notes.push("pattern " + resolved.pattern);
    if (resolved.minLength !== undefined) notes.push("at least " + count(resolved.minLength, "character"));
    if (resolved.maxLength !== undefined) notes.push("at most " + count(resolved.maxLength, "character"));
    if (resolved.minItems !== undefined) notes.push("at least " + count(resolved.minItems, "item"));
    if (resolved.maxItems !== undefined) notes.push("at most " + count(resolved.maxItems, "item"));
    if (resolved.minimum !== undefined) notes.push("from " + resolved.minimum);
    if (resolved.exclusiveMinimum !== undefined) notes.push("above " + resolved.exclusiveMinimum);
    if (resolved.maximum !== undefined) notes.push("up to " + resolved.maximum);
    if (resolved.exclusiveMaximum !== undefined) notes.push("below " + resolved.exclusiveMaximum);
    if (resolved.deprecated) notes.push("deprecated");
    return notes.join("; ");
  }

  function propertyRow(name, property, required) {
    const head = el("div", "prop-head");
    head.append(el("code", "prop-name", name), el("span", "type", typeLabel(property)));
    if (required) head.append(el("span", "tag-required", "required"));
    const extra = constraints(property);
    if (extra) head.append(el("span", "constraint", extra));
    const description = property && property.description;
    const inner = expandable(property);
    if (!inner) {
      const row = el("div", "prop");
      row.append(head);
      if (description) row.append(el("div", "desc", description));
      return row;
    }
    const summary = el("summary");
    summary.append(head);
    if (description) summary.append(el("div", "desc", description));
    return lazyDetails("prop", summary, function () { return schemaBody(inner); });
  }

  function schemaBlock(schema, open) {
    const inner = expandable(schema);
    const label = typeLabel(schema);
    if (!inner) return el("code", "type", label);
    const summary = el("summary");
    summary.append(el("code", "type", label));
    const resolved = resolve(schema);
    if (resolved && resolved.title && resolved.title !== label) summary.append(el("span", "note", " " + resolved.title));
    return lazyDetails("schema-root", summary, function () { return schemaBody(inner); }, open);
  }

  function mediaList(content, open) {
    const box = el("div", "media");
    for (const [mediaType, media] of Object.entries(content || {})) {
      const row = el("div", "media-row");
      row.append(el("span", "media-type", mediaType), schemaBlock(media.schema, open));
      box.append(row);
    }
    return box;
  }

  function scopesOf(operation) {
    const security = operation.security !== undefined ? operation.security : (spec.security || []);
    if (security.length === 0) return null;
    return security.map(function (requirement) {
      const scopes = [];
      for (const list of Object.values(requirement)) scopes.push.apply(scopes, list);
      return scopes.length ? scopes.join(" and ") : "any key";
    });
  }

  function parameterTable(parameters) {
    const table = el("table", "params");
    const head = el("tr");
    for (const title of ["Name", "In", "Type", "Description"]) head.append(el("th", null, title));
    table.append(head);
    for (const raw of parameters) {
      const parameter = resolve(raw);
      const row = el("tr");
      const name = el("td");
      name.append(el("code", null, parameter.name));
      if (parameter.required) name.append(el("span", "tag-required", "required"));
      const schema = resolve(parameter.schema) || {};
      const description = [parameter.description || ""];
      if (schema.enum) description.push("One of: " + schema.enum.join(", ") + ".");
      const extra = constraints(parameter.schema);
      if (extra) description.push(extra);
      row.append(name, el("td", null, parameter.in), el("td", "type", typeLabel(parameter.schema)),
        el("td", "desc", description.filter(Boolean).join(" ")));
      table.append(row);
    }
    return table;
  }

  function responseList(responses) {
    const box = el("div", "responses");
    for (const [status, raw] of Object.entries(responses || {})) {
      const response = resolve(raw);
      const row = el("div", "response");
      const head = el("div", "response-head");
      const statusClass = status.startsWith("2") ? "ok" : status === "default" ? "other" : "error";
      head.append(el("span", "status status-" + statusClass, status), el("span", null, response.description || ""));
      if (response.headers) head.append(el("span", "note", "headers: " + Object.keys(response.headers).join(", ")));
      row.append(head, mediaList(response.content, status.startsWith("2")));
      box.append(row);
    }
    return box;
  }

  function section(title, child) {
    const box = el("section", "part");
    box.append(el("h4", null, title), child);
    return box;
  }

  function operationEntry(path, method, operation) {
    const scopes = scopesOf(operation);
    const summary = el("summary");
    summary.append(el("span", "method method-" + method, method.toUpperCase()), el("code", "path", path),
      el("span", "summary", operation.summary || ""));
    summary.append(scopes ? el("span", "scope", scopes.join(" or ")) : el("span", "scope scope-none", "no key"));
    const body = el("div", "op-body");
    if (operation.description && operation.description !== operation.summary) {
      body.append(el("p", "desc", operation.description));
    }
    const facts = el("p", "facts");
    facts.append(el("span", null, scopes ? "Needs a key with the scope " + scopes.join(" or ") + "." : "Needs no key."));
    if (operation.operationId) facts.append(el("span", "note", " Operation " + operation.operationId + "."));
    if (operation["x-grpc-method"]) facts.append(el("span", "note", " gRPC " + operation["x-grpc-method"] + "."));
    body.append(facts);
    if (operation.parameters && operation.parameters.length) body.append(section("Parameters", parameterTable(operation.parameters)));
    if (operation.requestBody) body.append(section("Request body", mediaList(resolve(operation.requestBody).content, true)));
    body.append(section("Responses", responseList(operation.responses)));
    const details = el("details", "op");
    if (operation.operationId) details.id = operation.operationId;
    details.dataset.search = [method, path, operation.summary, operation.operationId, (scopes || ["no key"]).join(" ")]
      .join(" ").toLowerCase();
    details.append(summary, body);
    return details;
  }

  function render() {
    document.getElementById("title").textContent = spec.info.title;
    document.getElementById("version").textContent = "version " + spec.info.version + " · OpenAPI " + spec.openapi;
    document.getElementById("description").textContent = spec.info.description || "";
    document.title = spec.info.title;
    const groups = new Map();
    for (const tag of spec.tags || []) groups.set(tag.name, { tag: tag, operations: [] });
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        const operation = item[method];
        if (!operation) continue;
        const tagName = (operation.tags && operation.tags[0]) || "Other";
        if (!groups.has(tagName)) groups.set(tagName, { tag: { name: tagName }, operations: [] });
        groups.get(tagName).operations.push(operationEntry(path, method, operation));
      }
    }
    content.replaceChildren();
    toc.replaceChildren(el("h3", null, "Sections"));
    for (const group of groups.values()) {
      if (group.operations.length === 0) continue;
      const id = "tag-" + group.tag.name.replace(/[^A-Za-z0-9_-]/g, "-");
      const box = el("section", "tag");
      box.id = id;
      box.append(el("h2", null, group.tag.name));
      if (group.tag.description) box.append(el("p", "desc", group.tag.description));
      for (const entry of group.operations) box.append(entry);
      content.append(box);
      const link = el("a", null, group.tag.name + " (" + group.operations.length + ")");
      link.href = "#" + id;
      toc.append(link);
    }
    // A fragment typed or pasted by hand may hold a `%` that starts no escape: read it as written.
    let wanted = location.hash.slice(1);
    try {
      wanted = decodeURIComponent(wanted);
    } catch (malformed) {
      // kept as written
    }
    const target = wanted && document.getElementById(wanted);
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  filter.addEventListener("input", function () {
    const query = filter.value.trim().toLowerCase();
    for (const box of content.querySelectorAll("section.tag")) {
      let shown = 0;
      for (const entry of box.querySelectorAll("details.op")) {
        entry.hidden = query !== "" && !entry.dataset.search.includes(query);
        if (!entry.hidden) shown++;
      }
      box.hidden = shown === 0;
    }
  });

  fetch("openapi.json", { headers: { accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("openapi.json answered " + response.status);
      return response.json();
    })
    .then(function (loaded) {
      spec = loaded;
      render();
    })
    .catch(function (error) {
      content.replaceChildren(el("p", "error", "Could not load openapi.json: " + error.message));
    });
})();
