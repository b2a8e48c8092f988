-- Every invoice item names an invoice of its own account that the invoices stream read
-- (deleted invoices included, where the account still lists them: cliniko_every_route
-- false makes this a warning).
{{ config(severity='error' if var('cliniko_every_route') else 'warn') }}
select items.account, items.id, items.invoice_id
from {{ ref('invoice_items_current') }} as items
left join {{ ref('invoices_current') }} as invoices on invoices.account = items.account and invoices.id = items.invoice_id
where items.invoice_id is not null and invoices.id is null
