#!/usr/bin/env python3
"""Checks deploy/cloudformation/cloudoptim.yaml against the code it provisions for:

1. the operator's policy in the stack equals charts/cloudoptim/files/iam-policy.json rendered with the
   same values (placeholders replaced as `cloudoptim iam-policy` does), with and without a node role;
2. the role trusts EKS Pod Identity (sts:AssumeRole + sts:TagSession), and with an OIDC provider also
   IRSA for exactly system:serviceaccount:<ns>:<sa> with audience sts.amazonaws.com;
3. every message kind the intake parses (src/engine/interruption.rs `parse`) has an EventBridge rule
   with the `source` the intake requires for it (`provenance`), targeting the queue, and the queue
   policy lets exactly those rules send.

Usage: check-cfn-policy.py [REPO_ROOT]. Needs PyYAML (the cfn-lint venv has it).
"""

import copy
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
TEMPLATE = ROOT / "deploy/cloudformation/cloudoptim.yaml"
FAILURES = []


def fail(message):
    FAILURES.append(message)
    print(f"FAIL: {message}", file=sys.stderr)


class Tag:
    """A CloudFormation short-form intrinsic (!Sub, !If, ...) as {"Fn::X": value}."""


def _construct(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


class Loader(yaml.SafeLoader):
    pass


Loader.add_multi_constructor("!", _construct)


class Stack:
    """Just enough of CloudFormation's intrinsic functions to evaluate this template."""

    def __init__(self, template, params):
        self.template = template
        self.params = params
        self.conditions = {}
        for name, expr in template["Conditions"].items():
            self.conditions[name] = self.eval(expr)

    def attribute(self, resource, attr):
        return f"<{resource}.{attr}>"

    def ref(self, name):
        if name in self.params:
            return self.params[name]
        if name == "AWS::NoValue":
            return NOVALUE
        if name in self.template["Resources"]:
            return f"<{name}>"
        raise KeyError(f"Ref {name}: no such parameter")

    def sub(self, text, extra):
        def one(m):
            key = m.group(1)
            if key in extra:
                return extra[key]
            if "." in key and key.split(".", 1)[0] in self.template["Resources"]:
                return self.attribute(*key.split(".", 1))
            return self.ref(key)

        return re.sub(r"\$\{([A-Za-z0-9:._]+)\}", one, text)

    def eval(self, node):
        if isinstance(node, list):
            return [v for v in (self.eval(x) for x in node) if v is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                return self.sub(arg[0], {k: self.eval(v) for k, v in arg[1].items()})
            if key == "Fn::If":
                return self.eval(arg[1] if self.conditions[arg[0]] else arg[2])
            if key == "Fn::Equals":
                return self.eval(arg[0]) == self.eval(arg[1])
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::Select":
                return self.eval(arg[1])[int(arg[0])]
            if key == "Fn::Split":
                return self.eval(arg[1]).split(arg[0])
            if key == "Fn::GetAtt":
                return self.attribute(*arg)
            if key == "Condition":
                return self.conditions[arg]
        return {k: v for k, v in ((k, self.eval(v)) for k, v in node.items()) if v is not NOVALUE}


NOVALUE = object()


def render_chart_policy(values):
    """charts/cloudoptim/files/iam-policy.json as `cloudoptim iam-policy` renders it (src/cloud/iam.rs)."""
    text = (ROOT / "charts/cloudoptim/files/iam-policy.json").read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    doc = json.loads(text)
    doc["Statement"] = [s for s in doc["Statement"] if s.get("Resource") != ""]
    return doc


def intake_kinds():
    """(detail-type, source) for every message kind src/engine/interruption.rs parses."""
    code = (ROOT / "src/engine/interruption.rs").read_text()
    parse = code[code.index("pub fn parse(") :]
    parse = parse[: parse.index("other => return Err")]
    detail_types = re.findall(r'^\s+"([A-Z][A-Za-z0-9 -]+)"\s*(?:=>|\n\s*if)', parse, re.M)
    variants = re.findall(r"NoticeKind::(\w+)", parse)
    provenance = code[code.index("fn provenance(") :]
    provenance = provenance[: provenance.index("\n}\n")]
    sources = dict(re.findall(r'NoticeKind::(\w+).*?=> \("([a-z0-9.]+)"', provenance))
    # parse's arms name the kinds in the order of the detail types.
    seen = []
    for v in variants:
        if v not in seen:
            seen.append(v)
    if len(seen) != len(detail_types):
        fail(f"cannot pair intake detail types {detail_types} with kinds {seen}")
        return []
    return [(d, sources[v]) for d, v in zip(detail_types, seen)]


def main():
    template = yaml.load(TEMPLATE.read_text(), Loader=Loader)
    base = {
        "ClusterName": "prod-eu",
        "OidcProviderArn": "",
        "ServiceAccountNamespace": "platform",
        "ServiceAccountName": "cloudoptim",
        "EksClusterName": "",
        "NodeRoleArn": "arn:aws:iam::123456789012:role/prod-eu-nodes",
        "QueueName": "",
        "AWS::Partition": "aws",
        "AWS::Region": "eu-west-1",
        "AWS::AccountId": "123456789012",
    }
    assert set(template["Parameters"]) <= set(base), set(template["Parameters"]) - set(base)

    # 1. The policy, for a few parameter sets.
    for overrides in [{}, {"NodeRoleArn": ""}, {"QueueName": "prod-eu-interruptions"}]:
        params = {**base, **overrides}
        stack = Stack(template, params)
        stack.attribute = lambda r, a, p=params: (
            p["QueueName"] or f"cloudoptim-{p['ClusterName']}"
            if (r, a) == ("InterruptionQueue", "QueueName")
            else f"<{r}.{a}>"
        )
        got = stack.eval(template["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"])
        want = render_chart_policy(
            {
                "PARTITION": "aws",
                "REGION": "eu-west-1",
                "ACCOUNT_ID": "123456789012",
                "CLUSTER_NAME": params["ClusterName"],
                "QUEUE_NAME": params["QueueName"] or f"cloudoptim-{params['ClusterName']}",
                "NODE_ROLE_ARN": params["NodeRoleArn"],
            }
        )
        if got != want:
            fail(
                f"the stack's policy ({overrides or 'defaults'}) differs from iam-policy.json:\n"
                f"stack: {json.dumps(got, indent=1)}\nchart: {json.dumps(want, indent=1)}"
            )
        else:
            print(f"ok: policy == iam-policy.json rendered ({overrides or 'defaults'}), "
                  f"{len(got['Statement'])} statements")

    # 2. Trust: Pod Identity always, IRSA only with a provider and only for the chart's ServiceAccount.
    role = template["Resources"]["OperatorRole"]["Properties"]["AssumeRolePolicyDocument"]
    issuer = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
    for oidc in ["", f"arn:aws:iam::123456789012:oidc-provider/{issuer}"]:
        trust = Stack(template, {**base, "OidcProviderArn": oidc}).eval(role)
        if isinstance(trust, str):
            trust = json.loads(trust)
        by_sid = {s["Sid"]: s for s in trust["Statement"]}
        pod = by_sid.get("EksPodIdentity", {})
        if pod.get("Principal") != {"Service": "pods.eks.amazonaws.com"} or sorted(
            pod.get("Action", [])
        ) != ["sts:AssumeRole", "sts:TagSession"]:
            fail(f"Pod Identity trust wrong: {pod}")
        irsa = by_sid.get("Irsa")
        if not oidc:
            if irsa or len(trust["Statement"]) != 1:
                fail(f"without OidcProviderArn only Pod Identity is trusted: {trust}")
            continue
        want = {
            "Sid": "Irsa",
            "Effect": "Allow",
            "Principal": {"Federated": oidc},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{issuer}:sub": "system:serviceaccount:platform:cloudoptim",
                    f"{issuer}:aud": "sts.amazonaws.com",
                }
            },
        }
        if irsa != want or len(trust["Statement"]) != 2:
            fail(f"IRSA trust wrong:\n{json.dumps(trust, indent=1)}")
    print("ok: trust = Pod Identity (+ IRSA for system:serviceaccount:platform:cloudoptim with an OIDC provider)")

    # 3. Rules for every kind the intake reads; the queue policy admits exactly them.
    resources = template["Resources"]
    rules = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Events::Rule"
    }
    kinds = intake_kinds()
    if len(kinds) < 5:
        fail(f"found only {kinds} in the intake")
    for detail_type, source in kinds:
        matching = [
            n
            for n, p in rules.items()
            if detail_type in p["EventPattern"].get("detail-type", [])
            and p["EventPattern"].get("source") == [source]
            and any(t["Arn"] == {"Fn::GetAtt": ["InterruptionQueue", "Arn"]} for t in p["Targets"])
        ]
        if not matching:
            fail(f"no EventBridge rule sends {detail_type!r} (source {source}) to the queue")
        else:
            print(f"ok: {detail_type!r} (source {source}) -> {matching[0]} -> InterruptionQueue")
    queue = resources["InterruptionQueue"]["Properties"]
    if not (queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue):
        fail("the queue is not encrypted at rest")
    statements = resources["InterruptionQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allow = [s for s in statements if s["Effect"] == "Allow"]
    senders = sorted(a["Fn::GetAtt"][0] for a in allow[0]["Condition"]["ArnEquals"]["aws:SourceArn"])
    if (
        len(allow) != 1
        or allow[0]["Principal"] != {"Service": "events.amazonaws.com"}
        or allow[0]["Action"] != "sqs:SendMessage"
        or senders != sorted(rules)
    ):
        fail(f"the queue policy must let exactly the stack's rules send: {allow}")
    else:
        print(f"ok: queue encrypted; only events.amazonaws.com for {len(senders)} rules (aws:SourceArn) may send")
    outputs = set(template["Outputs"])
    if not {"RoleArn", "QueueUrl", "QueueArn"} <= outputs:
        fail(f"outputs RoleArn, QueueUrl, QueueArn expected: {outputs}")

    if FAILURES:
        print(f"0 passed, {len(FAILURES)} failed", file=sys.stderr)
        sys.exit(1)
    print("check-cfn-policy: all checks passed")


if __name__ == "__main__":
    main()
