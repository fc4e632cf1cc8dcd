#!/usr/bin/env python3
"""A kubectl stand-in for plain Envoy: the two calls istio/rollout.sh makes, served
from the ECDS file Envoy watches instead of a cluster.

    CANARY_ECDS_FILE=/path/canary-router.json \\
      istio/rollout.sh --kubectl envoy/kubectl-ecds.py ...

  get wasmplugin NAME -n NS -o json
      prints a WasmPlugin whose spec.pluginConfig is the plugin configuration in
      force (the ECDS resource's configuration string, parsed).
  patch wasmplugin NAME -n NS --type merge -p PATCH
      applies PATCH (a JSON merge patch, RFC 7386) to that WasmPlugin and writes
      its new spec.pluginConfig back into the ECDS file, atomically (a temporary
      file renamed over it): Envoy reloads the filter configuration, as istiod
      would push it. Only spec.pluginConfig may change.

Also, to write the first ECDS file (make demo-rollout):
  init WASM_PATH PLUGIN_CONFIG_FILE
      writes the ECDS resource loading WASM_PATH with that configuration.

Environment: CANARY_ECDS_FILE (required), CANARY_ECDS_PLUGIN (the WasmPlugin name
answered, default canary-router). Anything else fails like kubectl, exit 1.
"""
import json
import os
import sys

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def fail(msg):
    print("kubectl-ecds: " + msg, file=sys.stderr)
    sys.exit(1)


def ecds_path():
    path = os.environ.get("CANARY_ECDS_FILE")
    if not path:
        fail("set CANARY_ECDS_FILE to the ECDS file Envoy watches")
    return path


def write_atomically(path, doc):
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def resource(wasm, plugin_config_text):
    """The ECDS resource: the Wasm filter with this configuration string."""
    return {
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "canary-router",
            "typed_config": {
                "@type": WASM_TYPE,
                "config": {
                    "name": "canary-router",
                    "root_id": "canary-router",
                    "failure_policy": "FAIL_OPEN",
                    "vm_config": {
                        "vm_id": "canary-router",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm}},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_config_text,
                    },
                },
            },
        }]
    }


def load():
    """(the ECDS document, its configuration object, the plugin config parsed)."""
    path = ecds_path()
    try:
        with open(path) as f:
            doc = json.load(f)
        configuration = doc["resources"][0]["typed_config"]["config"]["configuration"]
        text = configuration["value"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        fail("%s: not an ECDS file with the Wasm filter's configuration (%s)" % (path, e))
    try:
        plugin_config = json.loads(text)
    except ValueError as e:
        fail("%s: the plugin configuration is not JSON: %s" % (path, e))
    return doc, configuration, plugin_config


def merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge(target.get(k), v)
    return target


def wasmplugin(name, namespace, plugin_config):
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pluginConfig": plugin_config},
    }


def opt(args, name):
    if name not in args:
        return None
    i = args.index(name)
    if i + 1 >= len(args):
        fail("%s needs a value" % name)
    return args[i + 1]


def main(args):
    if args[:1] == ["init"] and len(args) == 3:
        with open(args[2]) as f:
            text = f.read()
        json.loads(text)
        write_atomically(ecds_path(), resource(os.path.abspath(args[1]), text))
        return
    plugin = os.environ.get("CANARY_ECDS_PLUGIN", "canary-router")
    namespace = opt(args, "-n") or "default"
    if len(args) < 3 or args[1] not in ("wasmplugin", "wasmplugins") or args[0] not in ("get", "patch"):
        fail("unsupported call: kubectl %s (only get/patch wasmplugin)" % " ".join(args))
    if args[2] != plugin:
        print('Error from server (NotFound): wasmplugins.extensions.istio.io "%s" not found' % args[2],
              file=sys.stderr)
        sys.exit(1)
    doc, configuration, plugin_config = load()
    if args[0] == "get":
        if opt(args, "-o") != "json":
            fail("get: only -o json is supported")
        json.dump(wasmplugin(plugin, namespace, plugin_config), sys.stdout, indent=2)
        print()
        return
    if opt(args, "--type") != "merge":
        fail("patch: only --type merge is supported")
    try:
        patch = json.loads(opt(args, "-p") or "")
    except ValueError as e:
        fail("patch: -p is not JSON: %s" % e)
    before = wasmplugin(plugin, namespace, plugin_config)
    after = merge(json.loads(json.dumps(before)), patch)
    if not isinstance(after, dict) or {k: v for k, v in after.items() if k != "spec"} != \
            {k: v for k, v in before.items() if k != "spec"} or set(after.get("spec") or {}) != {"pluginConfig"}:
        fail("patch: only spec.pluginConfig can change here, got %s" % json.dumps(patch))
    configuration["value"] = json.dumps(after["spec"]["pluginConfig"], separators=(",", ":"))
    write_atomically(ecds_path(), doc)
    print("wasmplugin.extensions.istio.io/%s patched" % plugin)


if __name__ == "__main__":
    main(sys.argv[1:])
