# Cohort tables, status and report.html: a pure gather of the sessions' files. After a
# failed run (--keep-going) the same results are written from what finished, with the
# failed sessions and their reasons in status.csv and the report.
from vhi.results.tables import write_results_logged


rule build_cohort_tables:
    input:
        sessions=all_session_files,
        qc=all_qc_files,
    output:
        **RESULTS,
    params:
        plan=PLAN_DIGEST,
    log:
        f"{SETTINGS.logs_dir}/build_cohort_tables.log",
    localrule: True
    run:
        write_results_logged(list(PLAN.values()), LAYOUT, SETTINGS, log[0])


onerror:
    write_results_logged(list(PLAN.values()), LAYOUT, SETTINGS,
                         f"{SETTINGS.logs_dir}/build_cohort_tables.log", after_failure=True)
