#!/usr/bin/env python3
"""Generate examples/snapshot.yaml: the bundled cluster of `cloudoptim plan` (stdlib only, seeded).

A realistic 40-node EKS cluster in us-east-1 (three zones) as `kubectl get nodes,pods,poddisruptionbudgets
-A -o yaml` would write it, trimmed to the fields `plan` reads: m5/m6i/c5/r5/m7g nodes, spot and on-demand
(Karpenter and EKS managed node group labels), an arm64 pool, a tainted batch pool, four DaemonSets on
every node, Deployments with zone topology spread and hostname anti-affinity, StatefulSets with volumes,
a PDB that allows no disruption, a do-not-disrupt pod, a pod with required pod affinity, a bare pod, a
cordoned node, pending and completed pods. Most nodes are underutilised, as clusters that grew by
autoscaling and never shrank are.

    python3 bench/gen-example-snapshot.py > examples/snapshot.yaml
"""

import hashlib
import json
import random
import re
import sys

SEED = 42
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
KI = 1024
MI = 1024 * 1024

# instance type -> (cpu millis allocatable, memory Ki allocatable, pods) as EKS AL2023 nodes report them.
TYPES = {
    "m5.large": (1930, 7220184, 29),
    "m5.xlarge": (3920, 15076868, 58),
    "m5.2xlarge": (7910, 31709976, 58),
    "m6i.xlarge": (3920, 15076868, 58),
    "c5.xlarge": (3920, 7134444, 58),
    "c5.2xlarge": (7910, 15229788, 58),
    "r5.xlarge": (3920, 31850236, 58),
    "m7g.large": (1930, 7220184, 29),
    "m7g.xlarge": (3920, 15076868, 58),
}

# (pool, count, types, capacity, labels style)
POOLS = [
    ("system", 3, ["m5.large"], "on-demand", "eks"),
    ("general-od", 8, ["m5.xlarge", "m6i.xlarge", "m5.2xlarge"], "on-demand", "karpenter"),
    ("general-spot", 16, ["m5.xlarge", "m6i.xlarge", "c5.xlarge", "c5.2xlarge", "m5.large"], "spot", "karpenter"),
    ("arm", 6, ["m7g.large", "m7g.xlarge"], "spot", "karpenter"),
    ("batch", 3, ["c5.2xlarge"], "spot", "karpenter"),
    ("memory", 4, ["r5.xlarge"], "on-demand", "eks"),
]

DAEMONSETS = [
    ("kube-system", "aws-node", "25m", "64Mi"),
    ("kube-system", "kube-proxy", "100m", "64Mi"),
    ("kube-system", "ebs-csi-node", "10m", "40Mi"),
    ("monitoring", "node-exporter", "50m", "64Mi"),
]


def cpu_m(text):
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def mem_b(text):
    units = {"Ki": KI, "Mi": MI, "Gi": KI * MI}
    return int(float(text[:-2]) * units[text[-2:]])


class Cluster:
    def __init__(self, rng):
        self.rng = rng
        self.nodes = []  # dicts with name, zone, pool, type, cpu, mem, pods, used_cpu, used_mem, count, labels, taints
        self.pods = []
        self.pdbs = []

    def add_nodes(self):
        i = 0
        for pool, count, types, capacity, style in POOLS:
            for k in range(count):
                zone = ZONES[(i + k) % 3]
                itype = self.rng.choice(types)
                cpu, mem_ki, pods = TYPES[itype]
                subnet = {"us-east-1a": 10, "us-east-1b": 42, "us-east-1c": 77}[zone]
                name = f"ip-10-0-{subnet + i % 7}-{20 + i * 3}.ec2.internal"
                labels = {
                    "kubernetes.io/arch": "arm64" if itype.startswith("m7g") else "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "node.kubernetes.io/instance-type": itype,
                    "topology.kubernetes.io/region": "us-east-1",
                    "topology.kubernetes.io/zone": zone,
                    "workload": pool,
                }
                if style == "eks":
                    labels["eks.amazonaws.com/capacityType"] = "SPOT" if capacity == "spot" else "ON_DEMAND"
                    labels["eks.amazonaws.com/nodegroup"] = pool
                else:
                    labels["karpenter.sh/capacity-type"] = capacity
                    labels["karpenter.sh/nodepool"] = pool
                taints = []
                if pool == "batch":
                    taints.append({"key": "workload", "value": "batch", "effect": "NoSchedule"})
                self.nodes.append({
                    "name": name, "zone": zone, "pool": pool, "type": itype,
                    "cpu": cpu, "mem": mem_ki * KI, "maxpods": pods,
                    "used_cpu": 0, "used_mem": 0, "count": 0,
                    "labels": labels, "taints": taints, "unschedulable": False,
                    # Autoscaled clusters drift into many half-empty nodes.
                    "fill": self.rng.choice([0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 0.6, 0.8]),
                })
                i += 1
        # An operator is draining one node by hand.
        self.nodes[20]["unschedulable"] = True
        self.nodes[20]["taints"].append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})

    def fits(self, node, cpu, mem, fill):
        return (node["count"] + 1 <= node["maxpods"]
                and node["used_cpu"] + cpu <= node["cpu"] * fill
                and node["used_mem"] + mem <= node["mem"] * fill)

    def bind(self, node, cpu, mem):
        node["used_cpu"] += cpu
        node["used_mem"] += mem
        node["count"] += 1

    def pick(self, pools, cpu, mem, zone=None, avoid=()):
        candidates = [n for n in self.nodes
                      if n["pool"] in pools and not n["unschedulable"] and n["name"] not in avoid
                      and (zone is None or n["zone"] == zone)]
        self.rng.shuffle(candidates)
        for fill in (None, 1.0):
            for n in candidates:
                if self.fits(n, cpu, mem, n["fill"] if fill is None else fill):
                    return n
        return None

    def pod(self, namespace, name, node, containers, owner=None, labels=None, annotations=None,
            spec_extra=None, phase="Running"):
        metadata = {"name": name, "namespace": namespace}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        if owner:
            kind, owner_name = owner
            metadata["ownerReferences"] = [{
                "apiVersion": "batch/v1" if kind == "Job" else "apps/v1",
                "kind": kind, "name": owner_name, "controller": True, "blockOwnerDeletion": True,
                "uid": uid(self.rng),
            }]
        spec = {"containers": containers}
        if node is not None:
            spec["nodeName"] = node["name"]
        spec.update(spec_extra or {})
        self.pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                          "status": {"phase": phase}})

    def daemonsets(self):
        for node in self.nodes:
            for namespace, name, cpu, mem in DAEMONSETS:
                self.bind(node, cpu_m(cpu), mem_b(mem))
                self.pod(namespace, f"{name}-{suffix(self.rng, 5)}", node,
                         [container(name, cpu, mem)], owner=("DaemonSet", name),
                         labels={"app.kubernetes.io/name": name},
                         spec_extra={"tolerations": [{"operator": "Exists"}]})

    def deployment(self, namespace, name, replicas, cpu, mem, pools=("general-od", "general-spot"),
                   zone_spread=False, anti=False, selector=None, tolerations=None, extra_pod=None,
                   kind="ReplicaSet", pvc=False):
        hash_ = suffix(self.rng, 10)
        owner_name = name if kind == "StatefulSet" else f"{name}-{hash_}"
        labels = {"app": name}
        if kind == "ReplicaSet":
            labels["pod-template-hash"] = hash_
        spec_extra = {}
        if selector:
            spec_extra["nodeSelector"] = selector
        if tolerations:
            spec_extra["tolerations"] = tolerations
        affinity = {}
        if anti:
            affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": name}},
                "topologyKey": "kubernetes.io/hostname"}]}
        if extra_pod and "affinity" in extra_pod:
            affinity.update(extra_pod["affinity"])
        if affinity:
            spec_extra["affinity"] = affinity
        if zone_spread:
            spec_extra["topologySpreadConstraints"] = [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": name}}}]
        used = []
        for r in range(replicas):
            zone = ZONES[r % 3] if zone_spread else None
            node = self.pick(pools, cpu_m(cpu), mem_b(mem), zone=zone, avoid=used if anti else ())
            if node is None:
                raise SystemExit(f"cannot place {namespace}/{name}-{r}")
            used.append(node["name"])
            self.bind(node, cpu_m(cpu), mem_b(mem))
            pod_name = f"{name}-{r}" if kind == "StatefulSet" else f"{name}-{hash_}-{suffix(self.rng, 5)}"
            extra = dict(spec_extra)
            if pvc:
                extra["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}-{r}"}}]
            annotations = (extra_pod or {}).get("annotations")
            self.pod(namespace, pod_name, node, [container(name, cpu, mem)], owner=(kind, owner_name),
                     labels=dict(labels), annotations=annotations, spec_extra=extra)

    def pdb(self, namespace, name, app, allowed, healthy, min_available=None, max_unavailable=None):
        spec = {"selector": {"matchLabels": {"app": app}}}
        if min_available is not None:
            spec["minAvailable"] = min_available
        if max_unavailable is not None:
            spec["maxUnavailable"] = max_unavailable
        self.pdbs.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
            "status": {"currentHealthy": healthy, "desiredHealthy": healthy - allowed,
                       "disruptionsAllowed": allowed, "expectedPods": healthy, "observedGeneration": 1}})


def container(name, cpu, mem):
    return {"name": name, "image": f"registry.example.com/{name}:1.4.2",
            "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": mem}}}


def suffix(rng, n):
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def uid(rng):
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build():
    rng = random.Random(SEED)
    c = Cluster(rng)
    c.add_nodes()
    c.daemonsets()
    system = ("system",)
    c.deployment("kube-system", "coredns", 2, "100m", "70Mi", pools=system, anti=True)
    c.deployment("kube-system", "metrics-server", 1, "100m", "200Mi", pools=system)
    c.deployment("karpenter", "karpenter", 2, "500m", "1Gi", pools=system, anti=True)
    c.deployment("monitoring", "prometheus", 1, "1", "6Gi", pools=("memory",), kind="StatefulSet", pvc=True)
    c.deployment("monitoring", "grafana", 1, "100m", "256Mi")
    c.deployment("shop", "frontend", 6, "250m", "256Mi", zone_spread=True, anti=True)
    c.pdb("shop", "frontend", "frontend", allowed=1, healthy=6, max_unavailable=1)
    c.deployment("shop", "cart", 4, "200m", "512Mi", zone_spread=True)
    c.pdb("shop", "cart", "cart", allowed=1, healthy=4, min_available=3)
    c.deployment("shop", "catalog", 3, "500m", "1Gi", pools=("arm",), zone_spread=True,
                 selector={"kubernetes.io/arch": "arm64"})
    c.deployment("shop", "checkout", 3, "300m", "384Mi", zone_spread=True, anti=True)
    c.deployment("payments", "api", 3, "500m", "512Mi", anti=True, pools=("general-od",))
    c.pdb("payments", "api", "api", allowed=0, healthy=3, min_available="100%")
    c.deployment("payments", "ledger-writer", 1, "250m", "256Mi", pools=("general-od",),
                 extra_pod={"annotations": {"cloudoptim.io/do-not-disrupt": "true"}})
    c.deployment("search", "cache", 2, "250m", "2Gi", pools=("memory",), anti=True)
    c.deployment("search", "indexer", 2, "500m", "1Gi", pools=("memory",), extra_pod={"affinity": {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}})
    c.deployment("data", "postgres", 3, "1", "4Gi", pools=("memory", "general-od"), kind="StatefulSet",
                 pvc=True, zone_spread=True)
    batch = [{"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}]
    c.deployment("batch", "nightly-report", 3, "1", "2Gi", pools=("batch",), kind="Job",
                 selector={"workload": "batch"}, tolerations=batch)
    small = [("shop", "recommendations", 3), ("shop", "reviews", 2), ("shop", "images", 2),
             ("payments", "fraud-score", 2), ("payments", "webhooks", 2), ("search", "query", 3),
             ("auth", "sessions", 3), ("auth", "oauth", 2), ("notify", "email", 2), ("notify", "sms", 1),
             ("ops", "status-page", 1), ("ops", "feature-flags", 2), ("arm-apps", "thumbnails", 2)]
    for namespace, name, replicas in small:
        pools = ("arm",) if namespace == "arm-apps" else ("general-od", "general-spot")
        selector = {"kubernetes.io/arch": "arm64"} if namespace == "arm-apps" else None
        cpu = rng.choice(["50m", "100m", "150m", "200m", "250m"])
        mem = rng.choice(["128Mi", "256Mi", "384Mi", "512Mi"])
        c.deployment(namespace, name, replicas, cpu, mem, pools=pools, selector=selector,
                     zone_spread=replicas >= 3)
    # A debugging pod someone started by hand: nothing would recreate it.
    node = c.pick(("general-spot",), 10, 16 * MI)
    c.bind(node, 10, 16 * MI)
    c.pod("default", "debug-shell", node, [container("debug-shell", "10m", "16Mi")])
    # Not yet scheduled, and finished: neither takes room.
    c.pod("shop", "frontend-pending-x7k2p", None, [container("frontend", "250m", "256Mi")],
          owner=("ReplicaSet", "frontend-canary"), labels={"app": "frontend-canary"}, phase="Pending")
    done_node = c.nodes[30]
    c.pod("batch", "db-backup-28999200-z4k9q", done_node, [container("db-backup", "500m", "512Mi")],
          owner=("Job", "db-backup-28999200"), phase="Succeeded")
    return c


def node_object(n):
    obj = {"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": n["name"], "labels": n["labels"]},
           "spec": {"providerID": f"aws:///{n['zone']}/i-0{hashlib.sha256(n['name'].encode()).hexdigest()[:16]}"},
           "status": {"allocatable": {"cpu": f"{n['cpu']}m", "memory": f"{n['mem'] // KI}Ki",
                                      "pods": str(n["maxpods"])}}}
    if n["taints"]:
        obj["spec"]["taints"] = n["taints"]
    if n["unschedulable"]:
        obj["spec"]["unschedulable"] = True
    return obj


PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:-]*$")


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if PLAIN.match(s) and s not in ("true", "false", "null", "yes", "no", "on", "off", "y", "n") \
            and not s.endswith(":") and ": " not in s:
        return s
    return json.dumps(s)


def is_scalar(v):
    return not isinstance(v, (dict, list))


def flow(v):
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def small(v):
    """Small, flat maps and lists read best on one line, as people write them."""
    if isinstance(v, dict):
        return len(v) <= 4 and all(is_scalar(x) or (isinstance(x, dict) and len(x) <= 2 and all(map(is_scalar, x.values())))
                                   for x in v.values()) and len(flow(v)) <= 90
    if isinstance(v, list):
        return all(is_scalar(x) for x in v) and len(flow(v)) <= 90
    return True


def emit(v, indent, out):
    pad = " " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            if is_scalar(x) or (small(x) and x != {} and x != []):
                out.append(f"{pad}{scalar(k)}: {flow(x)}")
            else:
                out.append(f"{pad}{scalar(k)}:")
                emit(x, indent + 2, out)
    else:
        for x in v:
            if isinstance(x, dict):
                sub = []
                emit(x, indent + 2, sub)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                out.extend(sub)
            else:
                out.append(f"{pad}- {flow(x)}")


def main():
    c = build()
    items = [node_object(n) for n in c.nodes] + c.pods + c.pdbs
    out = ["# Bundled example for `cloudoptim plan` (generated by bench/gen-example-snapshot.py, seed 42).",
           "# A 40-node EKS cluster in us-east-1, as `kubectl get nodes,pods,poddisruptionbudgets -A -o yaml`",
           "# writes it, trimmed to the fields the planner reads.",
           "apiVersion: v1", "kind: List", "metadata:", "  resourceVersion: \"\"", "items:"]
    emit(items, 0, out)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
