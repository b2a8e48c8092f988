{#
  The accounts a loaded table is read from: (account name, relation) pairs.

  var('cliniko_accounts') maps each account's name to the schema its rows loaded into
  (orchestration/accounts.yml: cliniko_<name>); unset, the one account is the source's own
  schema, named var('cliniko_account', 'default'). An account without the table (a collection
  its user may not read, a stream that brought no rows yet) is left out; the `account` column
  tells the rest apart, so the same id in two clinics is two rows.
#}
{% macro account_relations(relation) %}
  {%- set accounts = var('cliniko_accounts', none) -%}
  {%- if not accounts -%}
    {{ return([(var('cliniko_account', 'default'), relation)]) }}
  {%- endif -%}
  {%- set found = [] -%}
  {%- for name, schema in accounts.items() -%}
    {%- set loaded = adapter.get_relation(database=relation.database, schema=schema, identifier=relation.identifier) if execute else none -%}
    {%- if loaded is not none -%}
      {%- do found.append((name, loaded)) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if not found -%}
    {#- at parse time, or no account has it: the first account's (missing) table, so dbt says which -#}
    {%- set first = accounts.items() | list | first -%}
    {%- do found.append((first[0], relation.incorporate(path={'schema': first[1]}))) -%}
  {%- endif -%}
  {{ return(found) }}
{% endmacro %}
