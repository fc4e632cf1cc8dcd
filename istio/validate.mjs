// Validates Kubernetes manifests against Istio's CRD schemas, using the
// @kubernetes-models/istio classes (generated from Istio's published CRDs):
//   node istio/validate.mjs NODE_MODULES_DIR FILE.yaml...
// NODE_MODULES_DIR holds @kubernetes-models/istio and yaml (`make istio-check`
// installs them into target/istio-check/node_modules).
// Prints one JSON line per YAML document:
//   {"file","index","apiVersion","kind","name","status","error"?,"object"}
// ("object" is the document as JSON, so callers need no YAML parser).
// status: "ok" (valid), "invalid" (schema errors in `error`), or "other" (not an
// *.istio.io kind; the caller validates those elsewhere). Exits 1 when any
// document is invalid or a file does not parse, 2 on a usage or install error.
import { createRequire } from "node:module";
import { readFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [modulesDir, ...files] = process.argv.slice(2);
if (!modulesDir || files.length === 0) {
  console.error("usage: node validate.mjs NODE_MODULES_DIR FILE.yaml...");
  process.exit(2);
}
const istioDir = join(resolve(modulesDir), "@kubernetes-models", "istio");
if (!existsSync(istioDir)) {
  console.error(`missing ${istioDir}: run \`make istio-check\``);
  process.exit(2);
}
const require = createRequire(join(resolve(modulesDir), "noop.js"));
const YAML = require("yaml");

// "networking.istio.io/v1" -> the module exporting that version's classes.
const loaded = new Map();
async function classFor(apiVersion, kind) {
  const [group, version] = String(apiVersion).split("/");
  if (!version || !group.endsWith(".istio.io")) return null;
  const index = join(istioDir, group, version, "index.js");
  if (!loaded.has(index)) {
    loaded.set(index, existsSync(index) ? await import(pathToFileURL(index).href) : {});
  }
  return loaded.get(index)[kind] ?? undefined;
}

let failed = false;
for (const file of files) {
  let docs;
  try {
    docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
  } catch (e) {
    console.log(JSON.stringify({ file, status: "invalid", error: String(e.message ?? e) }));
    failed = true;
    continue;
  }
  let index = -1;
  for (const doc of docs) {
    index += 1;
    const base = { file, index };
    if (doc.errors.length > 0) {
      console.log(JSON.stringify({ ...base, status: "invalid", error: doc.errors.map(String).join("; ") }));
      failed = true;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue; // an empty document
    const { apiVersion, kind } = obj;
    const out = { ...base, apiVersion, kind, name: obj.metadata?.name, object: obj };
    const Model = await classFor(apiVersion, kind);
    if (Model === null) {
      console.log(JSON.stringify({ ...out, status: "other" }));
      continue;
    }
    if (Model === undefined) {
      console.log(JSON.stringify({ ...out, status: "invalid", error: `no Istio schema for ${apiVersion} ${kind}` }));
      failed = true;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(JSON.stringify({ ...out, status: "ok" }));
    } catch (e) {
      console.log(JSON.stringify({ ...out, status: "invalid", error: String(e.message ?? e) }));
      failed = true;
    }
  }
}
process.exit(failed ? 1 : 0);
