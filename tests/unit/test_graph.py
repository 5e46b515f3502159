"""Sagas as Mermaid flowcharts: a definition's shape, an instance's progress, a
choreography's events; and no name, however hostile, can break out of its label."""

from __future__ import annotations

import re

from sagakit import Choreography, ChoreographyStep, Engine, MemoryStore, Saga, SagaState
from sagakit._graph import definition_graph, instance_graph, label, title
from sagakit.log import StepState, StepStatus
from sagakit.orchestration import CompensationContext, StepContext


async def release_stock(ctx: CompensationContext) -> None:
    return None


async def refund_payment(ctx: CompensationContext) -> None:
    return None


def order_saga() -> Saga:
    async def reserve_stock(ctx: StepContext) -> None:
        return None

    async def charge_payment(ctx: StepContext) -> None:
        return None

    async def ship(ctx: StepContext) -> None:
        return None

    async def email(ctx: StepContext) -> None:
        return None

    async def invoice(ctx: StepContext) -> None:
        return None

    saga = Saga("place_order", 1)
    saga.add(reserve_stock, compensate=release_stock)
    saga.add(charge_payment, compensate=refund_payment)
    saga.add(ship, kind="pivot")
    saga.add(email, kind="retriable")
    return saga.add(invoice, kind="retriable")


ORDER_CHART = """\
---
title: "place_order@1"
---
flowchart TD
    n0["reserve_stock (compensatable)"]
    n1["charge_payment (compensatable)"]
    n2{{"ship (pivot)"}}
    n3(["email (retriable)"])
    n4(["invoice (retriable)"])
    n5("release_stock (compensation)")
    n6("refund_payment (compensation)")
    n0 --> n1
    n1 --> n2
    n2 --> n3
    n3 --> n4
    n0 -.->|"undo"| n5
    n1 -.->|"undo"| n6
    n6 -.-> n5
    class n2 pivot
    class n5,n6 compensation
    classDef pivot stroke-width:4px
    classDef compensation stroke-dasharray:5 5
"""


def node_lines(chart: str) -> dict[str, str]:
    """Node id -> its declaration line."""
    found = {}
    for line in chart.splitlines():
        match = re.fullmatch(r"\s+(n\d+)[\[({].*", line)
        if match:
            found[match.group(1)] = line.strip()
    return found


def test_a_definition_is_its_steps_in_order_with_undo_edges_and_the_pivot_marked() -> None:
    chart = definition_graph([order_saga()])

    assert chart == ORDER_CHART
    nodes = node_lines(chart)
    for step in ("reserve_stock", "charge_payment", "ship", "email", "invoice"):
        assert sum(f'"{step} (' in line for line in nodes.values()) == 1
    assert nodes["n2"].startswith("n2{{")  # the pivot is the one hexagon
    assert sum("{{" in line for line in nodes.values()) == 1
    assert [line for line in chart.splitlines() if '|"undo"|' in line] == [
        '    n0 -.->|"undo"| n5',
        '    n1 -.->|"undo"| n6',
    ]


def test_several_definitions_are_one_chart_a_subgraph_each_with_ids_never_reused() -> None:
    other = Saga("refund", 2).add(lambda ctx: None, name="pay_back", kind="pivot")
    chart = definition_graph([order_saga(), other])

    lines = chart.splitlines()
    assert lines[0] == "flowchart TD"  # no title: each subgraph names its saga
    assert '    subgraph n0["place_order@1"]' in lines
    assert '    subgraph n8["refund@2"]' in lines
    assert '        n9{{"pay_back (pivot)"}}' in lines
    assert lines.count("    end") == 2
    ids = [line.split("[")[0].split("{")[0].split("(")[0].strip() for line in lines]
    declared = [i.removeprefix("subgraph ") for i in ids if re.fullmatch(r"(subgraph )?n\d+", i)]
    assert len(declared) == len(set(declared)) == 10
    assert "    class n3,n9 pivot" in lines


HOSTILE = 'a"] --> x\n%%{init {"theme" "dark"}}%%\nclick n0 "javascript alert(1)" <b>#quot;'


def test_a_hostile_step_name_stays_inside_its_label() -> None:
    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("evil\n---\ntitle: x", 1).add(lambda ctx: None, name=HOSTILE, compensate=undo)
    chart = definition_graph([saga])

    lines = chart.splitlines()
    assert len(lines) == 3 + 1 + 2 + 1 + 2  # front matter, header, nodes, the undo, its class
    step_line = lines[4]
    assert step_line.startswith('    n0["') and step_line.endswith(' (compensatable)"]')
    inside = step_line.removeprefix('    n0["').removesuffix('"]')
    assert re.fullmatch(r"[A-Za-z0-9 _\-.,@()#;]*", inside)
    assert '"' not in inside and "%" not in inside and "<" not in inside and ":" not in inside
    assert inside.startswith("a#34;#93; --#62; x#10;#37;#37;#123;init #123;#34;theme#34;")
    assert "#35;quot#59;" in inside  # a literal entity in the name is shown, not decoded
    assert lines[1] == 'title: "evil\\u000a---\\u000atitle\\u003a x@1"'
    assert "%%" not in chart


def test_a_hostile_kind_or_name_from_the_log_stays_inside_its_label() -> None:
    state = SagaState("id\n%%{init}%%", name='x"]', version=1)
    state.steps = [StepState('s"]\nclick n0 call(x)', 'k:#35;"]')]
    lines = instance_graph(state).splitlines()

    percents = "\\u0025\\u0025"
    directive = f"{percents}\\u007binit\\u007d{percents}"
    assert lines[1] == f'title: "x\\u0022\\u005d@1 id\\u000a{directive} (pending)"'
    assert lines[4] == '    n0["s#34;#93;#10;click n0 call(x) (k#58;#35;35#59;#34;#93;, pending)"]'
    assert len(lines) == 7  # front matter, header, the node, its class, the class's style


def test_labels_and_titles_escape_everything_but_plain_text() -> None:
    assert label("charge_payment v2.1, (eu)") == '"charge_payment v2.1, (eu)"'
    assert label('x"\r\x1b\u2028é') == '"x#34;#13;#27;#8232;#233;"'
    assert title("a\tb\U0001f600") == '"a\\u0009b\\U0001f600"'


async def failed_order() -> SagaState:
    saga = Saga("place_order", 1)

    async def reserve(ctx: StepContext) -> str:
        return "reserved"

    async def release(ctx: CompensationContext) -> None:
        return None

    async def charge(ctx: StepContext) -> None:
        raise ValueError("card declined")

    async def ship(ctx: StepContext) -> None:
        return None

    saga.add(reserve, compensate=release)
    saga.add(charge, compensate=release)
    saga.add(ship, kind="pivot")
    engine = Engine(MemoryStore(), [saga])
    await engine.run(saga, {"order": 1}, saga_id="order-1")
    return await engine.status("order-1")


async def test_an_instance_colours_each_step_by_its_status_and_titles_its_own() -> None:
    state = await failed_order()
    chart = instance_graph(state)

    statuses = {step.name: step.status for step in state.steps}
    assert statuses == {
        "reserve": StepStatus.COMPENSATED,
        "charge": StepStatus.FAILED,
        "ship": StepStatus.SKIPPED,
    }
    lines = chart.splitlines()
    assert lines[1] == 'title: "place_order@1 order-1 (compensated)"'
    nodes = node_lines(chart)
    assert nodes["n0"] == 'n0["reserve (compensatable, compensated)"]'
    assert nodes["n1"] == 'n1["charge (compensatable, failed)"]'
    assert nodes["n2"] == 'n2{{"ship (pivot, skipped)"}}'
    assert nodes["n3"] == 'n3("undo reserve (compensation)")'
    assert nodes["n4"] == 'n4("undo charge (compensation)")'
    assigned = {
        name: ids.split(",")
        for ids, name in (line.split()[1:] for line in lines if line.startswith("    class "))
    }
    for index, step in enumerate(state.steps):
        assert [
            name
            for name, ids in assigned.items()
            if f"n{index}" in ids and name in {s.value for s in StepStatus}
        ] == [step.status.value]
    assert "    classDef compensated fill:#fff3bf,stroke:#e67700,color:#000" in lines
    assert any(line.startswith("    classDef failed fill:#ffe3e3") for line in lines)
    assert any(line.startswith("    classDef skipped fill:#f1f3f5") for line in lines)
    assert not any(line.startswith("    classDef succeeded") for line in lines)  # unused


def test_an_instance_of_a_foreign_kind_and_no_steps_still_draws() -> None:
    empty = instance_graph(SagaState("lost-1"))
    assert empty == '---\ntitle: "@0 lost-1 (pending)"\n---\nflowchart TD\n'


ORDER_CHOREOGRAPHY = Choreography(
    "order_choreography",
    version=1,
    steps=[
        ChoreographyStep("create_order", succeeded="OrderCreated", compensated="OrderCancelled"),
        ChoreographyStep(
            "charge_payment",
            succeeded="PaymentCompleted",
            failed="PaymentDeclined",
            compensated="PaymentRefunded",
        ),
        ChoreographyStep(
            "reserve_stock",
            started="StockReservationStarted",
            succeeded="StockReserved",
            failed="StockReservationFailed",
        ),
        ChoreographyStep("create_shipment", succeeded="ShipmentCreated", kind="pivot"),
    ],
    starts={"OrderCreated"},
    completes={"ShipmentCreated"},
    fails={"PaymentDeclined", "StockReservationFailed"},
    compensated={"OrderCancelled"},
)


def test_a_choreography_is_its_services_and_the_events_between_them() -> None:
    chart = definition_graph([ORDER_CHOREOGRAPHY])

    assert chart.splitlines() == [
        "---",
        'title: "order_choreography@1"',
        "---",
        "flowchart TD",
        '    n0["create_order (compensatable)"]',
        '    n1["charge_payment (compensatable)"]',
        '    n2["reserve_stock (compensatable)"]',
        '    n3{{"create_shipment (pivot)"}}',
        '    n4(("compensated"))',
        '    n5(("completed"))',
        '    n0 -->|"OrderCreated"| n1',
        '    n0 -.->|"OrderCancelled"| n4',
        '    n1 -->|"PaymentCompleted"| n2',
        '    n1 -.->|"PaymentDeclined"| n0',
        '    n1 -.->|"PaymentRefunded"| n0',
        '    n2 -->|"StockReservationStarted"| n2',
        '    n2 -->|"StockReserved"| n3',
        '    n2 -.->|"StockReservationFailed"| n1',
        '    n3 -->|"ShipmentCreated"| n5',
        "    class n3 pivot",
        "    classDef pivot stroke-width:4px",
    ]


def test_a_failure_with_nothing_to_undo_and_a_failed_undo_lead_to_their_ends() -> None:
    choreography = Choreography(
        "c",
        steps=[
            ChoreographyStep("a", failed="AFailed", compensation_failed="AStuck"),
            ChoreographyStep("b", succeeded="BDone"),
        ],
        starts="BDone",
        completes="BDone",
    )
    lines = definition_graph([choreography]).splitlines()

    assert '    n2(("compensated"))' in lines and '    n3(("needs attention"))' in lines
    assert '    n0 -.->|"AFailed"| n2' in lines
    assert '    n0 -.->|"AStuck"| n3' in lines
    assert '    n1 -->|"BDone"| n4' in lines and '    n4(("completed"))' in lines
