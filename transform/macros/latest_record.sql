{#
  The current state of a Cliniko collection read as ONE stream holding all its rows
  (archived, cancelled and deleted ones included): one row per key, its latest record.

  A loader that upserts on the primary key holds one row per key; one that appends holds a
  version per sync. The latest wins: by the newest of updated_at and the lifecycle dates
  (archiving may leave updated_at alone), then the later lifecycle state (deleted, archived,
  cancelled, active: as Cliniko's own precedence), then the loader's batch and sequence
  columns where it writes them, so equal records are the only ties left.

  The columns are read from the loaded table, so whatever the loader made of the schema
  passes through; a source column named `status` (invoices) becomes `cliniko_status`.
  `status_sql` replaces the lifecycle status (practitioners: active or inactive).
  `key` lists the primary key's columns (child streams: the parent's id and the row's id).
  `loader_deletes`: a full-table stream, whose rows gone from Cliniko a loader that honours
  ACTIVATE_VERSION keeps and stamps `_sdc_deleted_at` (target-postgres): those are deleted.

  Every account's table is read (account_relations), its name in `account`, and keys are
  unique per account: two clinics may both have an id 1. A column one account's table lacks
  is null in its rows.
#}
{% macro latest_record(table, status_sql=none, source_name='tap_cliniko', key=['id'], loader_deletes=false) %}
{%- set relation = source(source_name, table) -%}
{%- set key = [key] if key is string else key -%}
{%- if not execute -%}
select * from {{ relation }}
{%- else -%}
{%- set accounts = account_relations(relation) -%}
{%- set names = [] -%}
{%- set has = {} -%}
{%- for account, loaded in accounts -%}
  {%- set own = adapter.get_columns_in_relation(loaded) | map(attribute='name') | map('lower') | list -%}
  {%- do has.update({account: own}) -%}
  {%- for name in own if name not in names and name != 'account' -%}
    {%- do names.append(name) -%}
  {%- endfor -%}
{%- endfor -%}
{#- (date column, status) pairs, the strongest state first; target-duckdb's _sdc_deleted_at is text -#}
{%- set markers = [] -%}
{%- if loader_deletes and '_sdc_deleted_at' in names -%}
  {%- do markers.append(('_sdc_deleted_at', 'deleted')) -%}
  {%- set loader_deleted_at = 'cast(_sdc_deleted_at as timestamp)' -%}
{%- endif -%}
{%- for marker in ['deleted', 'archived', 'cancelled'] if marker ~ '_at' in names -%}
  {%- do markers.append((marker ~ '_at', marker)) -%}
{%- endfor -%}
{#- status_sql decides the status, except for a row the loader marked deleted -#}
{%- set status_markers = [] -%}
{%- for column, status in markers if not status_sql or column == '_sdc_deleted_at' -%}
  {%- do status_markers.append((column, status)) -%}
{%- endfor -%}
{%- set order_extra = [] -%}
{%- for meta in ['_sdc_batched_at', '_sdc_extracted_at', '_sdc_received_at', '_sdc_sequence'] if meta in names -%}
  {%- do order_extra.append(meta ~ ' desc nulls last') -%}
{%- endfor -%}
{%- set dates = [] -%}
{%- for column in ['updated_at', 'deleted_at', 'archived_at', 'cancelled_at', 'created_at'] if column in names -%}
  {%- do dates.append(column) -%}
{%- endfor -%}
{%- set base = ('coalesce(' ~ dates | join(', ') ~ ')') if dates else 'cast(null as timestamp)' -%}
with loaded as (
  {%- for account, loaded in accounts %}
  select
    '{{ account }}' as account,
    {% for name in names -%}
    {{ adapter.quote(name) if name in has[account] else 'null' }} as {{ adapter.quote(name) }}{{ ',' if not loop.last }}
    {% endfor -%}
  from {{ loaded }}
  {%- if not loop.last %}
  union all
  {%- endif %}
  {%- endfor %}
),

records as (
  select
    account,
    {% for name in names -%}
    {{ adapter.quote(name) }}{{ ' as cliniko_status' if name == 'status' }},
    {% endfor -%}
    {%- if status_markers %}
    case
      {%- for column, status in status_markers %}
      when {{ column }} is not null then '{{ status }}'
      {%- endfor %}
      else {{ status_sql or "'active'" }}
    end as status,
    {%- else %}
    {{ status_sql or "'active'" }} as status,
    {%- endif %}
    {%- if markers %}
    case
      {%- for column, status in markers %}
      when {{ column }} is not null then {{ loop.revindex }}
      {%- endfor %}
      else 0
    end as _status_rank,
    {%- else %}
    0 as _status_rank,
    {%- endif %}
    {%- if markers %}
    greatest(
      {{ base }}
      {%- for column, status in markers %},
      coalesce({{ loader_deleted_at if column == '_sdc_deleted_at' else column }}, {{ base }})
      {%- endfor %}
    ) as last_changed_at
    {%- else %}
    {{ base }} as last_changed_at
    {%- endif %}
  from loaded
),

ranked as (
  select
    *,
    row_number() over (
      partition by account, {{ key | join(', ') }}
      order by {{ (['last_changed_at desc nulls last', '_status_rank desc'] + order_extra) | join(', ') }}
    ) as _recency
  from records
)

select
  account,
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
