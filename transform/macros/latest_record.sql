{#
  The current state of a Cliniko collection read as ONE stream holding all its rows
  (archived, cancelled and deleted ones included): one row per id, its latest record.

  A loader that upserts on the primary key holds one row per id; one that appends holds a
  version per sync. The latest wins: by the newest of updated_at and the lifecycle dates
  (archiving may leave updated_at alone), then the later lifecycle state (deleted, archived,
  cancelled, active: as Cliniko's own precedence), then the loader's batch and sequence
  columns where it writes them, so equal records are the only ties left.

  The columns are read from the loaded table, so whatever the loader made of the schema
  passes through; a source column named `status` (invoices) becomes `cliniko_status`.
  `status_sql` replaces the lifecycle status (practitioners: active or inactive).
#}
{% macro latest_record(table, status_sql=none, source_name='tap_cliniko', key='id') %}
{%- set relation = source(source_name, table) -%}
{%- if not execute -%}
select * from {{ relation }}
{%- else -%}
{%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
{%- set markers = [] -%}
{%- for marker in ['deleted', 'archived', 'cancelled'] if marker ~ '_at' in names -%}
  {%- do markers.append(marker) -%}
{%- endfor -%}
{%- set order_extra = [] -%}
{%- for meta in ['_sdc_batched_at', '_sdc_extracted_at', '_sdc_received_at', '_sdc_sequence'] if meta in names -%}
  {%- do order_extra.append(meta ~ ' desc nulls last') -%}
{%- endfor -%}
{%- set dates = ['updated_at'] -%}
{%- for marker in markers -%}{%- do dates.append(marker ~ '_at') -%}{%- endfor -%}
{%- set base = 'coalesce(' ~ (dates + ['created_at']) | join(', ') ~ ')' -%}
with records as (
  select
    {% for name in names -%}
    {{ adapter.quote(name) }}{{ ' as cliniko_status' if name == 'status' }},
    {% endfor -%}
    {%- if status_sql %}
    {{ status_sql }} as status,
    {%- else %}
    {%- if markers %}
    case
      {%- for marker in markers %}
      when {{ marker }}_at is not null then '{{ marker }}'
      {%- endfor %}
      else 'active'
    end as status,
    {%- else %}
    'active' as status,
    {%- endif %}
    {%- endif %}
    {%- if markers %}
    case
      {%- for marker in markers %}
      when {{ marker }}_at is not null then {{ loop.revindex }}
      {%- endfor %}
      else 0
    end as _status_rank,
    {%- else %}
    0 as _status_rank,
    {%- endif %}
    greatest(
      {{ base }}
      {%- for marker in markers %},
      coalesce({{ marker }}_at, {{ base }})
      {%- endfor %}
    ) as last_changed_at
  from {{ relation }}
),

ranked as (
  select
    *,
    row_number() over (
      partition by {{ key }}
      order by {{ (['last_changed_at desc nulls last', '_status_rank desc'] + order_extra) | join(', ') }}
    ) as _recency
  from records
)

select
  {% for name in names -%}
  {{ 'cliniko_status' if name == 'status' else adapter.quote(name) }},
  {% endfor -%}
  status,
  status = 'deleted' as is_deleted,
  last_changed_at
from ranked
where _recency = 1
{%- endif %}
{% endmacro %}
