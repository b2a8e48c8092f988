{#
  Keys and references hold within one account: two clinics can both have a patient 1, and an
  appointment's patient_id names a patient of the same clinic. `column_name` may be an SQL
  expression (a composite key joined with ':').
#}
{% test unique_in_account(model, column_name) %}
select account, {{ column_name }} as key_value, count(*) as rows_with_it
from {{ model }}
group by account, {{ column_name }}
having count(*) > 1
{% endtest %}

{% test relationships_in_account(model, column_name, to, field) %}
select child.account, child.{{ column_name }}
from {{ model }} as child
left join {{ to }} as parent
  on parent.account = child.account and parent.{{ field }} = child.{{ column_name }}
where child.{{ column_name }} is not null and parent.{{ field }} is null
{% endtest %}
