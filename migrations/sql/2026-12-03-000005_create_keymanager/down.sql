DROP INDEX km_audit_time;
DROP TABLE km_audit;
DROP TABLE km_store;
