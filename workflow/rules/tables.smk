# Cohort tables, status and report.html: a pure gather of the sessions' files, written
# only when every session's files exist. After a failed or interrupted run the error
# handler writes what finished to results/partial/ (never the targets of `rule all`) and
# moves complete results of an earlier run to results/stale/, so nothing in results/
# looks current that is not; the same command run again retries the failed sessions and
# then writes results/.
from vhi.results.tables import write_results_logged


rule build_cohort_tables:
    input:
        sessions=all_session_files,
        qc=all_qc_files,
    output:
        **RESULTS,
    params:
        plan=run_plan_digest,
    log:
        f"{SETTINGS.logs_dir}/build_cohort_tables.log",
    localrule: True
    run:
        write_results_logged(RUN.plan, LAYOUT, SETTINGS, log[0])


onerror:
    try:
        write_results_logged(RUN.plan, LAYOUT, SETTINGS,
                             f"{SETTINGS.logs_dir}/build_cohort_tables.log", after_failure=True)
    finally:
        RUN.finish()
