{#
  The current state of a Cliniko collection that the tap reads as one stream per status
  (patients, archived_patients, deleted_patients): one row per id, taken from the stream the
  id last appeared in, with that stream's status.

  A loader upserts by id within a table and never removes a row, so an id archived since the
  last load still has its old row in the active table: the newest record wins, by `changed_at`
  (an SQL expression), and on a tie the stream listed later (deleting cannot be undone).
#}
{% macro current_state(source_name, streams, columns, changed_at='updated_at', key='id') %}
with records as (
  {%- for table, status in streams %}
    select
      {{ columns | join(',\n      ') }},
      '{{ status }}' as status,
      {{ loop.index }} as status_rank
    from {{ source(source_name, table) }}
    {%- if not loop.last %}
    union all
    {%- endif %}
  {%- endfor %}
),

ranked as (
    select
      *,
      {{ changed_at }} as last_changed_at,
      row_number() over (
        partition by {{ key }}
        order by {{ changed_at }} desc, status_rank desc
      ) as recency
    from records
)

select
  {{ columns | join(',\n  ') }},
  status,
  status = 'deleted' as is_deleted,
  last_changed_at
from ranked
where recency = 1
{% endmacro %}
