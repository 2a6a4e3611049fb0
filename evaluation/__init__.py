"""Response criteria, reader agreement, endpoints and statistics, pooled statistics, report, CDISC export."""
