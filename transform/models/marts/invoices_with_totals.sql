-- Invoices with their business and practitioner, and the count and sum of their items.
-- Deleted items are left out of both: Cliniko no longer bills them.
with items as (
  select
    account,
    invoice_id,
    count(*) as item_count,
    sum(cast(total_including_tax as decimal(18, 2))) as items_total
  from {{ ref('invoice_items_current') }}
  where not is_deleted
  group by account, invoice_id
)

select
  i.account,
  i.id,
  i.number,
  i.issue_date,
  i.patient_id,
  i.business_id,
  b.business_name,
  i.practitioner_id,
  nullif(trim(concat(p.first_name, ' ', p.last_name)), '') as practitioner_name,
  coalesce(items.item_count, 0) as item_count,
  coalesce(items.items_total, 0) as items_total,
  cast(i.total_amount as decimal(18, 2)) as total_amount,
  i.cliniko_status,
  i.status,
  i.is_deleted,
  i.updated_at
from {{ ref('invoices_current') }} as i
left join items on items.account = i.account and items.invoice_id = i.id
left join {{ ref('businesses_current') }} as b on b.account = i.account and b.id = i.business_id
left join {{ ref('practitioners_current') }} as p on p.account = i.account and p.id = i.practitioner_id
