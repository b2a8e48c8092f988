-- Every invoice item names an invoice the invoices stream read (deleted invoices included).
select items.account, items.id, items.invoice_id
from {{ ref('invoice_items_current') }} as items
left join {{ ref('invoices_current') }} as invoices on invoices.account = items.account and invoices.id = items.invoice_id
where items.invoice_id is not null and invoices.id is null
