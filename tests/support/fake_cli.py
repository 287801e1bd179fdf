#!/usr/bin/env python3
"""A stand-in for snap, microk8s, juju, docker and charmcraft: records each call, keeps a little state.

Invoked through wrappers named after the real commands, which pass their path first. $FAKE_STATE is a JSON file:
installed snaps, enabled addons, controller, model, deployed applications, and
`fail`: a command prefix (e.g. "juju bootstrap") that exits 1 with an error.
"""

import json
import os
import sys
from pathlib import Path

name = Path(sys.argv[1]).name  # the wrapper on PATH passes its own path ($0) first
args = sys.argv[2:]
line = " ".join([name, *args])
state_path = Path(os.environ["FAKE_STATE"])
state = json.loads(state_path.read_text())
with open(os.environ["FAKE_CALLS"], "a") as log:
    log.write(line + "\n")


def save():
    state_path.write_text(json.dumps(state))


def done(out="", code=0, err=""):
    sys.stdout.write(out)
    sys.stderr.write(err)
    save()
    sys.exit(code)


if state.get("fail") and line.startswith(state["fail"]):
    done(code=1, err=f"ERROR {state.get('fail_message', 'simulated failure')}\n")

if name == "snap":
    if args[:1] == ["version"]:
        done("snap 2.63\n")
    if args[:1] == ["list"]:
        done(
            code=0 if args[1] in state["snaps"] else 1,
            err="" if args[1] in state["snaps"] else "error: no matching snaps installed\n",
        )
    if args[:1] == ["install"]:
        # a store name, or a downloaded file (juju_29.snap) installed after `snap ack`
        state["snaps"].append(Path(args[1]).name.split("_")[0] if args[1].endswith(".snap") else args[1])
        done()
    if args[:1] == ["download"]:
        target = Path(next(a.split("=", 1)[1] for a in args if a.startswith("--target-directory=")))
        (target / f"{args[1]}_42.snap").write_bytes(b"snap")
        (target / f"{args[1]}_42.assert").write_text("assertion")
        done()
    if args[:1] == ["ack"]:
        done()
elif name == "microk8s":
    if "microk8s" not in state["snaps"]:
        done(code=127, err="microk8s: not installed\n")
    if args[:1] == ["status"] and "--format" in args:
        addons = [{"name": a, "status": "enabled"} for a in state["addons"]]
        done(json.dumps({"microk8s": {"running": True}, "addons": addons}))
    if args[:1] == ["status"]:
        done("microk8s is running\n")
    if args[:1] == ["enable"]:
        state["addons"].append(args[1])
        done()
    if args[:1] == ["kubectl"]:
        done(json.dumps({"spec": {"ports": [{"name": "http2", "port": 80, "nodePort": 31380}]}}))
elif name == "juju":
    if "juju" not in state["snaps"]:
        done(code=127, err="juju: not installed\n")
    if args[:1] == ["version"]:
        done("3.6.4-genericlinux-amd64\n")
    if args[:1] == ["download"]:
        import zipfile

        import yaml

        # A charm as Charmhub serves it: a zip whose metadata.yaml lists its OCI resources.
        resources = state.get("charm_resources", {}).get(args[1], {})
        meta = {
            "name": args[1],
            "resources": {k: {"type": "oci-image", "upstream-source": v} for k, v in resources.items()},
        }
        with zipfile.ZipFile(args[args.index("--filepath") + 1], "w") as z:
            z.writestr("metadata.yaml", yaml.safe_dump(meta))
        done()
    if args[:1] == ["show-controller"]:
        done(code=0 if state["controller"] else 1)
    if args[:1] == ["bootstrap"]:
        state["controller"] = True
        done()
    if args[:1] == ["show-model"]:
        done(code=0 if state["model"] else 1)
    if args[:1] == ["add-model"]:
        state["model"] = True
        done()
    if args[:1] == ["deploy"]:
        bundle = Path(args[3])
        import yaml

        apps = set(yaml.safe_load(bundle.read_text())["applications"])
        for i, a in enumerate(args):
            if a == "--overlay":
                apps |= set(yaml.safe_load(Path(args[i + 1]).read_text()).get("applications") or {})
        state["apps"] = sorted(apps)
        done()
    if args[:1] == ["status"]:
        if not state["model"]:
            done(code=1, err="model not found\n")
        status = "active" if state.get("settled") else "waiting"
        done(json.dumps({"applications": {a: {"application-status": {"current": status}} for a in state["apps"]}}))
    if args[:1] == ["wait-for"]:
        state["settled"] = True
        done()
elif name == "docker":
    if args[:1] == ["save"]:
        Path(args[args.index("-o") + 1]).write_bytes(b"image layers")
        state.setdefault("saved", []).extend(args[3:])
    if args[:1] == ["push"]:
        state.setdefault("pushed", []).append(args[1])
    if args[:1] in (["pull"], ["tag"], ["load"], ["save"], ["push"]):
        done()
elif name == "charmcraft" and args[:1] == ["pack"]:
    Path("onnx-model_amd64.charm").write_bytes(b"charm")
    done()
done(code=2, err=f"fake {name}: unexpected call {args}\n")
