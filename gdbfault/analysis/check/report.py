"""The output of `gdbfault check`: its report as a table, as JSON, and as JUnit XML."""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["render_check", "junit_xml", "error_report"]


def render_check(report, fmt="table"):
    if fmt == "json":
        slim = {k: v for k, v in report.items() if k != "results"}
        return json.dumps(slim, indent=1) + "\n"
    width = max(len(o["name"]) for o in report["expectations"]) if report["expectations"] else 0
    lines = [f" {'✓' if o['passed'] else '✗'} {o['name']:<{width}}  {o['detail']}"
             for o in report["expectations"]]
    lines.append(f"{report['passed']} passed, {report['failed']} failed")
    return "\n".join(lines) + "\n"


def junit_xml(report):
    """JUnit XML text: one testsuite, one testcase per expectation."""
    suite = ET.Element("testsuite", name=f"gdbfault check {Path(report['spec']).name}",
                       tests=str(len(report["expectations"])), failures=str(report["failed"]),
                       errors=str(report.get("errors", 0)), time=f"{report.get('time_s') or 0:.3f}")
    props = ET.SubElement(suite, "properties")
    for name, run in (report.get("runs") or {}).items():
        ET.SubElement(props, "property", name=f"run.{name}",
                      value=f"{run['variant'] or run['kernel']} · {run['workload']} × {run['iterations']}")
    classname = Path(report["spec"]).stem
    for o in report["expectations"]:
        case = ET.SubElement(suite, "testcase", classname=classname, name=o["name"])
        if o.get("error"):
            err = ET.SubElement(case, "error", message=o["error"])
            err.text = o["error"]
        elif not o["passed"]:
            fail = ET.SubElement(case, "failure",
                                 message=f"expectation '{o['name']}' failed: {o['detail']}")
            fail.text = (f"expected: {o['left']} {o['op']} {o['right']}"
                         + (f" × {o['factor']}" if o.get("factor") is not None else "")
                         + f"\nmeasured: {o['detail']}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def error_report(spec, message):
    """A report where every expectation is an error (the runs could not be made)."""
    return {"spec": spec.path, "runs": {}, "failed": 0, "errors": len(spec.expectations),
            "expectations": [{"name": e.name, "error": message, "passed": False}
                             for e in spec.expectations]}
