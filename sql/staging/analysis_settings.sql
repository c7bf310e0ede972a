-- grain: one row
-- keys: none
-- The analysis settings the views read, one column each: the value `pie analyze` stored in table
-- settings (analytics.analyze.write_settings), else the default, defined here and nowhere else
-- in the SQL. Every view reads its settings from this relation, never from table settings.
-- mode_tie_break: who wins a tied modal label: 'largest' class id (the reference), 'smallest',
-- or 'exclude' (the largest, and the image is left out of the PIE sets).
with stored as (
    select name, value
    from settings
),

final as (
    select
        coalesce(any_value(value) filter (where name = 'mode_tie_break'), 'largest')
            as mode_tie_break
    from stored
)

select * from final
