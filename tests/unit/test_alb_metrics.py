"""CloudWatch-named metrics in Prometheus text: which response counts where."""

from __future__ import annotations

from services.alb_sim.metrics import Metrics


def test_target_and_elb_responses_are_counted_apart() -> None:
    m = Metrics("app/x/1")
    m.connection_opened()
    m.request(target_group="api", elb_status=200, target_status=200, target_time=0.25, received=100, sent=200)
    m.request(target_group="api", elb_status=502, target_status=None, target_time=None, received=10, sent=20)
    m.request(target_group=None, elb_status=463, target_status=None, target_time=None, received=1, sent=2)
    m.request(target_group=None, elb_status=301, target_status=None, target_time=None, received=0, sent=0)
    text = m.render([("api", 1, 1)])
    lb = 'LoadBalancer="app/x/1"'
    for line in [f"RequestCount{{{lb}}} 4", f'RequestCount{{{lb},TargetGroup="api"}} 2',
                 f'HTTPCode_Target_2XX_Count{{{lb},TargetGroup="api"}} 1', f"HTTPCode_ELB_5XX_Count{{{lb}}} 1",
                 f"HTTPCode_ELB_502_Count{{{lb}}} 1", f"HTTPCode_ELB_4XX_Count{{{lb}}} 1",
                 f"HTTPCode_ELB_463_Count{{{lb}}} 1", f"HTTPCode_ELB_3XX_Count{{{lb}}} 1",
                 f"ProcessedBytes{{{lb}}} 333", f"NewConnectionCount{{{lb}}} 1", f"ActiveConnectionCount{{{lb}}} 1",
                 f'TargetResponseTime_sum{{{lb},TargetGroup="api"}} 0.25',
                 f'TargetResponseTime_count{{{lb},TargetGroup="api"}} 1',
                 f'HealthyHostCount{{{lb},TargetGroup="api"}} 1', f'UnHealthyHostCount{{{lb},TargetGroup="api"}} 1']:
        assert line in text.splitlines(), line
    assert "HTTPCode_Target_5XX_Count" not in text  # the 502 came from the ALB, not the target


def test_only_what_happened_is_rendered_each_name_typed_once() -> None:
    m = Metrics("app/x/1")
    lb = 'LoadBalancer="app/x/1"'
    assert m.render([]).splitlines() == ["# TYPE ActiveConnectionCount gauge", f"ActiveConnectionCount{{{lb}}} 0"]
    m.request(target_group="web", elb_status=503, target_status=None, target_time=None, received=0, sent=0)
    for tg in ("api", "web"):
        m.request(target_group=tg, elb_status=404, target_status=404, target_time=0.5, received=1, sent=1)
    lines = m.render([]).splitlines()
    assert lines.count("# TYPE RequestCount counter") == 1
    assert f'RequestCount{{{lb},TargetGroup="web"}} 2' in lines  # its 503 counts as a request of the group
    assert f'HTTPCode_Target_4XX_Count{{{lb},TargetGroup="web"}} 1' in lines
    assert f'TargetResponseTime_count{{{lb},TargetGroup="web"}} 1' in lines  # the 503 had no target time
    assert f"ProcessedBytes{{{lb}}} 4" in lines
    assert not [line for line in lines if 'TargetGroup=""' in line or "_2XX" in line or "_5XX_Count{" in line
                and "Target" in line]
