{#
  The current state of a Cliniko collection that the tap reads as one stream per status
  (patients, archived_patients, deleted_patients): one row per id, taken from the stream the
  id last appeared in, with that stream's status.

  A loader upserts by id within a table and never removes a row, so an id archived since the
  last load still has its old row in the active table: the newest record wins, by `changed_at`
  (an SQL expression), and on a tie the stream listed later (deleting cannot be undone).
  Every account's tables are read (account_relations), one per id per `account`.
#}
{% macro current_state(source_name, streams, columns, changed_at='updated_at', key='id') %}
with records as (
  {%- set parts = [] -%}
  {%- for table, status in streams -%}
    {%- set rank = loop.index -%}
    {%- for account, loaded in account_relations(source(source_name, table)) -%}
      {%- do parts.append((account, loaded, status, rank)) -%}
    {%- endfor -%}
  {%- endfor -%}
  {%- for account, loaded, status, rank in parts %}
    select
      '{{ account }}' as account,
      {{ columns | join(',\n      ') }},
      '{{ status }}' as status,
      {{ rank }} as status_rank
    from {{ loaded }}
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
        partition by account, {{ key }}
        order by {{ changed_at }} desc, status_rank desc
      ) as recency
    from records
)

select
  account,
  {{ columns | join(',\n  ') }},
  status,
  status = 'deleted' as is_deleted,
  last_changed_at
from ranked
where recency = 1
{% endmacro %}
