-- The same function as in 20261203000100, in PL/pgSQL: a SQL-language
-- SECURITY DEFINER function with a SET clause is neither inlined nor
-- cached, so every call parsed and planned its three-way UNION again. It
-- was the costliest statement of an exercise saga (0.5 ms a call, measured
-- with pg_stat_statements). PL/pgSQL keeps its plan for the session.
CREATE OR REPLACE FUNCTION equity_saga_step_holders(target_saga UUID, target_step INTEGER)
    RETURNS TABLE (kind TEXT, holder_id UUID, holder_company UUID)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
    BEGIN
        RETURN QUERY
            SELECT 'option_reservation'::text, r.id, r.company_id
            FROM option_reservations r WHERE r.saga_id = target_saga AND r.step = target_step
            UNION ALL
            SELECT 'repurchase_reservation'::text, r.id, r.company_id
            FROM repurchase_reservations r WHERE r.saga_id = target_saga AND r.step = target_step
            UNION ALL
            SELECT 'tombstone'::text, NULL::uuid, t.company_id
            FROM saga_tombstones t WHERE t.saga_id = target_saga AND t.step = target_step;
    END
    $$;
