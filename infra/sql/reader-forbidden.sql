-- The functions siphon's read-only role (the login `$dump-sql` and query dumps run as)
-- must not be able to execute: one SELECT of `regprocedure` names, used by
-- infra/sql/reader-role.sh (which revokes them from PUBLIC and grants them back to the
-- service role) and by siphon itself (which refuses caller-written SQL while the
-- read-only role can still execute any of them). Families:
--   SQL given as text:   query_to_xml*, cursor_to_xml*, table/schema/database_to_xml*, ts_stat
--   settings:            set_config
--   locks and signals:   pg_advisory*, pg_try_advisory*, pg_cancel_backend, pg_terminate_backend, pg_notify
--   large objects:       lo_*, loread, lowrite
--   files and server:    pg_read_file, pg_read_binary_file, pg_ls_*, pg_stat_file, pg_reload_conf,
--                        pg_rotate_logfile, pg_promote, pg_switch_wal, pg_create_restore_point,
--                        pg_backup_*, pg_logical_emit_message, replication slots and origins
--   time:                pg_sleep*
SELECT p.oid::regprocedure::text
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pg_catalog'
   AND (p.proname ~ '^(query|cursor|table|schema|database)_to_xml'
        OR p.proname IN ('ts_stat', 'set_config', 'pg_cancel_backend', 'pg_terminate_backend',
                         'pg_notify', 'loread', 'lowrite', 'pg_read_file', 'pg_read_binary_file',
                         'pg_stat_file', 'pg_reload_conf', 'pg_rotate_logfile', 'pg_promote',
                         'pg_switch_wal', 'pg_create_restore_point', 'pg_logical_emit_message',
                         'pg_import_system_collations')
        OR p.proname ~ '^pg_(try_)?advisory'
        OR p.proname ~ '^lo_'
        OR p.proname ~ '^pg_ls_'
        OR p.proname ~ '^pg_sleep'
        OR p.proname ~ '^pg_backup_'
        OR p.proname ~ '^pg_(start|stop)_backup'
        OR p.proname ~ 'replication_(slot|origin)')
